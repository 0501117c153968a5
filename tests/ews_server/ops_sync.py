"""SyncFolderItems: what changed in a folder since a SyncState (every item, from none).

A SyncState here names a snapshot the server keeps of the folder as the client last saw
it (each item's read state and the rest of what it holds); the changes are the
difference between that and the folder now, ReadFlagChange where only the read state
moved, Update where anything else did, Create and Delete.  MaxChangesReturned pages them:
each answer's SyncState is the old snapshot with the changes it sent applied, and
IncludesLastItemInRange says whether any are left.  A SyncState the server does not know
(`Mailbox.sync_states` cleared, as Exchange forgets old ones) is refused with
ErrorInvalidSyncStateData."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import secrets

from lxml import etree

from .context import Context, OpError
from .itemxml import CLASS_ELEMENTS, ITEM_KINDS, Shape, item_element
from .paging import child
from .soap import bool_text, m, response, response_message, sub, t
from .store import Item, Mailbox

Snapshot = dict[str, tuple[bool, str]]  # item id -> (IsRead, digest of everything else)
_serial = itertools.count(1)


def _digest(item: Item) -> str:
    parts = [item.item_class, item.mime.hex(), repr(sorted(item.extended))]
    parts += [etree.tostring(p).decode() for _, p in sorted(item.extended.items())]
    parts += [etree.tostring(p).decode() for _, p in sorted(item.props.items())]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _state_token(folder_id: str) -> str:
    # Exchange's SyncState is an opaque base64 blob of some hundreds of bytes.
    raw = json.dumps({"f": folder_id, "n": next(_serial), "pad": secrets.token_hex(96)})
    return base64.b64encode(raw.encode()).decode()


def _known(box: Mailbox, token: str | None, folder_id: str) -> Snapshot:
    if token is None:
        return {}
    snapshot = box.sync_states.get(token)
    try:
        same_folder = json.loads(base64.b64decode(token, validate=True))["f"] == folder_id
    except (ValueError, KeyError, TypeError):
        same_folder = False
    if snapshot is None or not same_folder:
        raise OpError(
            "ErrorInvalidSyncStateData",
            "Synchronization state data is corrupt or otherwise invalid.",
        )
    return snapshot


def _order(ctx: Context, item: Item) -> tuple[str, ...]:
    kind = CLASS_ELEMENTS.get(item.item_class, "Message")
    return ctx.server.schema.child_order(ITEM_KINDS[kind][1])


def sync_folder_items(ctx: Context, req: etree._Element) -> etree._Element:
    shape = Shape(child(req, "ItemShape"))
    limit = int(_text(req, "MaxChangesReturned") or "512")
    token = _text(req, "SyncState") or None
    try:
        folder_ref = child(req, "SyncFolderId")
        refs = [c for c in (folder_ref if folder_ref is not None else ()) if isinstance(c.tag, str)]
        if not refs:
            raise OpError("ErrorInvalidRequest", "SyncFolderId is required.")
        box, folder = ctx.folder(refs[0])
        known = dict(_known(box, token, folder.id))
    except OpError as exc:
        # An error message holds an empty SyncState and IncludesLastItemInRange too, as
        # Exchange's do (exchangelib reads both before the response code).
        failed = response_message("SyncFolderItems", exc.code, exc.text)
        sub(failed, m("SyncState"))
        sub(failed, m("IncludesLastItemInRange", "true"))
        return response("SyncFolderItems", [failed])
    now = {i.id: i for i in sorted(box.items_in(folder.id), key=lambda i: (i.received, i.id))}
    pending: list[tuple[str, str]] = [("Delete", iid) for iid in known if iid not in now]
    for iid, item in now.items():
        seen = known.get(iid)
        if seen is None:
            pending.append(("Create", iid))
        elif seen[1] != _digest(item):
            pending.append(("Update", iid))
        elif seen[0] != item.is_read:
            pending.append(("ReadFlagChange", iid))
    sent, left = pending[:limit], pending[limit:]
    changes = m("Changes")
    for kind, iid in sent:
        change = sub(changes, t(kind))
        if kind == "Delete":
            sub(change, t("ItemId", Id=iid, ChangeKey="CK0"))
            known.pop(iid, None)
            continue
        item = now[iid]
        known[iid] = (item.is_read, _digest(item))
        if kind == "ReadFlagChange":
            sub(change, t("ItemId", Id=item.id, ChangeKey=item.changekey))
            sub(change, t("IsRead", bool_text(item.is_read)))
        else:
            change.append(item_element(box, item, shape, _order(ctx, item)))
    new_token = _state_token(folder.id)
    box.sync_states[new_token] = known
    msg = response_message("SyncFolderItems")
    sub(msg, m("SyncState", new_token))
    sub(msg, m("IncludesLastItemInRange", bool_text(not left)))
    msg.append(changes)
    return response("SyncFolderItems", [msg])


def _text(req: etree._Element, name: str) -> str | None:
    found = child(req, name)
    return found.text if found is not None else None


OPERATIONS = {"SyncFolderItems": sync_folder_items}

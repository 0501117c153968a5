"""What changed in an EWS source folder since a pass read it: SyncFolderItems
(exchangelib's `Folder.sync_items`), from the SyncState the last pass kept in the
folder's `FolderState.sync`.  The first pass lists a folder with SyncFolderItems too
(from no state, paged to the end): one enumeration gives its messages and the SyncState
they were listed at, so what changes meanwhile shows next time.

Create is a new message, Update one whose flags (or anything else) changed,
ReadFlagChange one read or unread (its other flags read again with GetItem), Delete one
gone (deleted or moved out).  A SyncState the server refuses (ErrorInvalidSyncStateData:
expired, or another server's) makes the folder listed whole, and recognised at the target.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from exchangelib.errors import ErrorInvalidSyncStateData

from migrator.connectors.ews.account import ews_call
from migrator.connectors.ews.props import FLAG_STATUS_FLAGGED, aware, stable_int
from migrator.gmail import label_keyword
from migrator.plan import MessageRef
from migrator.syncstate import FolderChanges, FolderState

log = logging.getLogger(__name__)

# MaxChangesReturned: Exchange's largest (MaxSyncChangesReturnedType), unless the
# environment names a smaller one (the tests page with a few).
SYNC_PAGE_ENV = "MIGRATOR_EWS_SYNC_PAGE"
SYNC_PAGE = 512
LISTED_FIELDS = (
    "datetime_received",
    "datetime_sent",
    "size",
    "message_id",
    "is_read",
    "is_draft",
    "migrator_flag_status",
    "categories",
)
_FLAG_FIELDS = ("is_read", "is_draft", "migrator_flag_status", "categories")


def sync_page() -> int:
    try:
        return max(1, min(SYNC_PAGE, int(os.environ.get(SYNC_PAGE_ENV, SYNC_PAGE))))
    except ValueError:
        return SYNC_PAGE


def item_flags(item: Any) -> tuple[str, ...]:
    """IsRead, the flag status and IsDraft as IMAP flags, and each category as a keyword
    (gmail.label_keyword: an Exchange target makes it the category again)."""
    flags = ["\\Seen"] if item.is_read else []
    if getattr(item, "migrator_flag_status", None) == FLAG_STATUS_FLAGGED:
        flags.append("\\Flagged")
    if item.is_draft:
        flags.append("\\Draft")
    categories = getattr(item, "categories", None) or ()
    flags += sorted({label_keyword(c) for c in categories if c and c.strip()})
    return tuple(flags)


def message_ref(folder: str, uidvalidity: int, item: Any) -> MessageRef:
    """A listed message (no body) as the copier plans it: its ItemId is its uid."""
    return MessageRef(
        folder=folder,
        uidvalidity=uidvalidity,
        uid=str(item.id),
        size=int(item.size or 0),
        internaldate=aware(item.datetime_received),
        date_header=aware(item.datetime_sent),
        flags=item_flags(item),
        message_id=str(item.message_id).strip() if item.message_id else None,
    )


def initial_listing(ews_folder: Any, name: str, what: str) -> tuple[list[MessageRef], FolderState]:
    """Folder `name`'s messages and its SyncState as listed, in one enumeration:
    SyncFolderItems from no state gives every item as a Create, with the listed fields,
    paged to the end; what changes meanwhile shows in the next pass."""
    uidvalidity = stable_int(ews_folder.id)

    def enumerate_all() -> tuple[list[MessageRef], str]:
        ews_folder.item_sync_state = None  # else sync_items starts from the one it holds
        refs: list[MessageRef] = []
        for change in ews_folder.sync_items(
            only_fields=list(LISTED_FIELDS), max_changes_returned=sync_page()
        ):
            if isinstance(change, Exception):
                raise change  # a response message in error, handed back as a value
            kind, item = change
            if kind == "create" and not isinstance(item, Exception):
                refs.append(message_ref(name, uidvalidity, item))
        return refs, str(ews_folder.item_sync_state)

    refs, sync = ews_call(what, enumerate_all)
    return refs, FolderState(uidvalidity, 0, None, sync)


def folder_changes(
    account: Any,
    ews_folder: Any,
    name: str,
    since: FolderState,
    what: str,
) -> FolderChanges | None:
    """The changes of folder `name` since `since`; None where it must be listed whole (no
    SyncState kept, another folder under the name, or the SyncState refused)."""
    uidvalidity = stable_int(ews_folder.id)
    if since.sync is None or since.uidvalidity != uidvalidity:
        return None

    def read() -> tuple[list[tuple[str, Any]], str] | None:
        try:
            changes = list(
                ews_folder.sync_items(
                    sync_state=since.sync,
                    only_fields=list(LISTED_FIELDS),
                    max_changes_returned=sync_page(),
                )
            )
        except ErrorInvalidSyncStateData:
            return None
        failed = next((c for c in changes if isinstance(c, Exception)), None)
        if failed is not None:
            raise failed  # a response message in error, handed back as a value
        return changes, str(ews_folder.item_sync_state)

    answer = ews_call(what, read)
    if answer is None:
        log.warning(
            "source folder %r: its SyncState was refused (ErrorInvalidSyncStateData): "
            "listed whole, the copies at the target recognised",
            name,
        )
        return None
    changes, sync = answer
    return _gather(account, changes, FolderState(uidvalidity, 0, None, sync), name, what)


def _gather(
    account: Any, changes: list[tuple[str, Any]], state: FolderState, name: str, what: str
) -> FolderChanges:
    created: dict[str, Any] = {}
    updated: dict[str, tuple[str, ...]] = {}
    read_flag: dict[str, bool] = {}
    gone: set[str] = set()
    for kind, item in changes:
        if kind == "read_flag_change":
            ident, is_read = item
            read_flag[str(ident.id)] = bool(is_read)
            continue
        ident = str(item.id)
        if kind == "delete":
            gone.add(ident)
            for held in (created, updated, read_flag):
                held.pop(ident, None)
        elif kind == "create" or ident in created:
            created[ident] = item
            read_flag.pop(ident, None)
        else:
            updated[ident] = item_flags(item)
            read_flag.pop(ident, None)
    for ident, is_read in read_flag.items():
        if ident in created:
            created[ident].is_read = is_read
    unread_others = [i for i in read_flag if i not in created]
    updated.update(_current_flags(account, unread_others, what))
    uidvalidity = state.uidvalidity
    new = [message_ref(name, uidvalidity, item) for item in created.values()]
    return FolderChanges(state, new, updated, vanished=frozenset(gone))


def _current_flags(account: Any, ids: list[str], what: str) -> dict[str, tuple[str, ...]]:
    """The flags of messages whose read state changed (GetItem): a ReadFlagChange says
    nothing of the others.  One gone meanwhile is left out (its Delete comes next time)."""
    if not ids:
        return {}

    def get() -> list[Any]:
        return list(account.fetch(ids=[(i, None) for i in ids], only_fields=list(_FLAG_FIELDS)))

    items = ews_call(f"{what}, reading {len(ids)} read-state changes", get)
    return {
        ident: item_flags(item)
        for ident, item in zip(ids, items, strict=True)
        if not isinstance(item, Exception)
    }

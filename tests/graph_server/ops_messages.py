"""Messages: importMime (beta, held to the contract in ../shared/graph-schema/README.md),
listing a folder's messages (with $select, $expand of extended properties, $orderby,
paging), one message and its MIME ($value), PATCH of read state, flag, categories and
extended properties, permanentDelete, and messages/delta per folder."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Any

from .context import Call, GraphError, Reply, filter_eq, iso
from .ops_folders import find_folder
from .store import Folder, Message, header, mime_dates, new_id

PAGE = 10  # Graph's default page of messages; $top up to 1000
MAX_TOP = 1000
# Extended property ids: "{type} {tag}", or "{type} {guid} Name {name}" / "Id {id}".
_PROPERTY_ID = re.compile(
    r"^(Integer|String|SystemTime|Boolean|Binary|Long|Double|Short|Float|Currency|CLSID)\s+"
    r"(0x[0-9A-Fa-f]{4}|\{[0-9A-Fa-f-]{36}\}\s+(Name\s+\S.*|Id\s+0x[0-9A-Fa-f]+))$"
)
DELIVERY_TIME = "SystemTime 0x0E06"
SUBMIT_TIME = "SystemTime 0x0039"
MESSAGE_FLAGS = "Integer 0x0E07"
MESSAGE_SIZE = "Integer 0x0E08"


def message_json(message: Message, select: set[str] | None, expand: list[str]) -> dict[str, Any]:
    full: dict[str, Any] = {
        "id": message.id,
        "createdDateTime": iso(message.created),
        "lastModifiedDateTime": iso(message.created),
        "receivedDateTime": iso(message.received),
        "sentDateTime": iso(message.sent or message.received),
        "isRead": message.is_read,
        "isDraft": message.is_draft,
        "flag": {"flagStatus": message.flag_status},
        "categories": list(message.categories),
        "parentFolderId": message.folder_id,
        "hasAttachments": b"Content-Disposition: attachment" in message.mime,
        "internetMessageId": header(message.mime, "message-id"),
    }
    body = full if select is None else {k: v for k, v in full.items() if k in select | {"id"}}
    if expand:
        # PR_MESSAGE_SIZE is Exchange's to compute, never set by a client.
        known = {**message.properties, MESSAGE_SIZE: str(message.size)}
        body["singleValueExtendedProperties"] = [
            {"id": pid, "value": known[pid]} for pid in expand if pid in known
        ]
    return body


def _select(call: Call) -> set[str] | None:
    text = call.query.get("$select")
    return {s.strip() for s in text.split(",")} if text else None


def _expand(call: Call) -> list[str]:
    """$expand=singleValueExtendedProperties($filter=id eq '...' or id eq '...')."""
    text = call.query.get("$expand", "")
    if not text:
        return []
    match = re.fullmatch(r"singleValueExtendedProperties\(\$filter=(.+)\)", text.strip())
    if match is None:
        raise GraphError(400, "BadRequest", f"Unsupported $expand: {text}")
    wanted = filter_eq(match.group(1))
    for prop, value in wanted:
        if prop != "id" or not _PROPERTY_ID.match(value):
            call.violation(f"$expand names a malformed extended property id {value!r}")
    return [value for _, value in wanted]


def find_message(call: Call, message_id: str) -> Message:
    found = call.mailbox.messages.get(message_id)
    if found is None:
        raise GraphError(404, "ErrorItemNotFound", "The object was not found in the store.")
    return found


# -- importMime ------------------------------------------------------------------------


def import_mime(call: Call, folder: Folder) -> Reply:
    if call.version != "beta":
        raise GraphError(400, "BadRequest", "Resource not found for the segment 'importMime'.")
    content_type = call.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "text/plain":
        call.violation(f"importMime with Content-Type {content_type!r}, not text/plain")
    if call.query:
        call.violation(f"importMime takes no parameters, got {sorted(call.query)}")
    text = call.body.replace(b"\r\n", b"")
    if text.lstrip().startswith(b"{"):
        call.violation("importMime body is a JSON envelope, not base64 MIME")
    try:
        mime = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        call.violation("importMime body is not base64")
        raise GraphError(400, "ErrorMimeContentInvalidBase64String", "Invalid base64.") from None
    if b"\n\n" not in mime.replace(b"\r\n", b"\n") and b":" not in mime.split(b"\n", 1)[0]:
        raise GraphError(400, "ErrorMimeContentConversionFailed", "The MIME content is invalid.")
    server, box = call.server, call.mailbox
    if server.max_message_size is not None and len(mime) > server.max_message_size:
        raise GraphError(
            413,
            "ErrorMessageSizeExceeded",
            f"The message exceeds the maximum supported size of {server.max_message_size} bytes.",
        )
    if box.quota_bytes is not None and box.usage() + len(mime) > box.quota_bytes:
        raise GraphError(507, "ErrorQuotaExceeded", "The mailbox has exceeded its quota.")
    received, sent = mime_dates(mime)
    message = Message(
        new_id("M"),
        folder.id,
        mime,
        received=received or sent or datetime.now(UTC),
        sent=sent,
    )
    box.messages[message.id] = message
    box.touch(message)
    server.imported += 1
    return Reply(201, message_json(message, None, []), type_name="message")


# -- reading ---------------------------------------------------------------------------


def list_messages(call: Call, folder: Folder, base: str) -> Reply:
    messages = call.mailbox.in_folder(folder.id)
    order = call.query.get("$orderby", "")
    if order.replace(" ", "").lower() == "receiveddatetimedesc":
        messages.sort(key=lambda m: (m.received, m.id), reverse=True)
    else:
        messages.sort(key=lambda m: m.id)
    top = min(int(call.query.get("$top", PAGE)), MAX_TOP)
    skip = int(call.query.get("$skip", 0))
    select, expand = _select(call), _expand(call)
    body: dict[str, Any] = {
        "value": [message_json(m, select, expand) for m in messages[skip : skip + top]]
    }
    if skip + top < len(messages):
        rest = {k: v for k, v in call.query.items() if k != "$skip"}
        query = "&".join(f"{k}={v}" for k, v in {**rest, "$skip": str(skip + top)}.items())
        body["@odata.nextLink"] = f"{base}?{query}"
    return Reply(200, body, type_name="message", collection=True)


def delta(call: Call, folder: Folder, base: str) -> Reply:
    """messages/delta: every message changed since the token (all at first), and those
    removed, in pages of 10 unless `Prefer: odata.maxpagesize` asks more (up to 1000);
    each page but the last carries @odata.nextLink, the last @odata.deltaLink for the
    next round.  A page goes on from the last change it sent (not an offset), up to the
    mailbox's change counter when the round began: a message changed meanwhile is in the
    next round, never skipped."""
    box = call.mailbox
    since, _, generation = call.query.get("$deltatoken", "0").partition(".")
    if generation and int(generation) != box.delta_generation:
        # A state the mailbox no longer keeps (Mailbox.forget_delta_states), as Exchange
        # Online answers an expired or foreign delta token.
        text = "The sync state generation is not found."
        raise GraphError(410, "syncStateNotFound", text)
    upto, _, after = call.query.get("$skiptoken", f"{box.changes}.{since}").partition(".")
    low, high = int(after), int(upto)
    select = _select(call)
    entries: list[tuple[int, dict[str, Any]]] = [
        (m.change, message_json(m, select, []))
        for m in box.in_folder(folder.id)
        if low < m.change <= high
    ]
    entries += [
        (change, {"id": mid, "@removed": {"reason": "deleted"}})
        for change, fid, mid in box.removed
        if fid == folder.id and low < change <= high
    ]
    entries.sort(key=lambda e: e[0])
    page = entries[: _max_page_size(call)]
    body: dict[str, Any] = {"value": [entry for _, entry in page]}
    token = f"{since}.{box.delta_generation}"
    if len(page) < len(entries):
        skip = f"{high}.{page[-1][0]}"
        body["@odata.nextLink"] = f"{base}?$deltatoken={token}&$skiptoken={skip}"
    else:
        body["@odata.deltaLink"] = f"{base}?$deltatoken={high}.{box.delta_generation}"
    return Reply(200, body, type_name="message", collection=True)


def _max_page_size(call: Call) -> int:
    """Prefer: odata.maxpagesize=N (RFC 7240 preferences, comma separated), else 10."""
    for preference in call.headers.get("prefer", "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "odata.maxpagesize" and value.strip().isdigit():
            return max(1, min(int(value), MAX_TOP))
    return PAGE


def mime_value(call: Call, message: Message) -> Reply:
    return Reply(200, message.mime, {"Content-Type": "text/plain"})


# -- changing --------------------------------------------------------------------------


def patch_message(call: Call, message: Message) -> Reply:
    data = call.json if isinstance(call.json, dict) else {}
    if "isRead" in data:
        message.is_read = bool(data["isRead"])
    if isinstance(data.get("flag"), dict) and "flagStatus" in data["flag"]:
        message.flag_status = str(data["flag"]["flagStatus"])
    if "categories" in data:
        message.categories = list(data["categories"] or [])
    for prop in data.get("singleValueExtendedProperties") or []:
        pid, value = prop.get("id", ""), prop.get("value")
        if not isinstance(pid, str) or not _PROPERTY_ID.match(pid):
            call.violation(f"malformed extended property id {pid!r}")
            raise GraphError(400, "ErrorInvalidExtendedPropertyValue", "Bad property id.")
        message.properties[pid] = str(value)
        if pid == DELIVERY_TIME:
            message.received = _system_time(call, str(value))
    call.mailbox.touch(message)
    return Reply(200, message_json(message, None, []), type_name="message")


def _system_time(call: Call, text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        call.violation(f"SystemTime value {text!r} is not ISO 8601")
        raise GraphError(400, "ErrorInvalidExtendedPropertyValue", "Bad SystemTime.") from None


def permanent_delete(call: Call, message: Message) -> Reply:
    call.mailbox.remove(message.id)
    return Reply(204)


def messages(call: Call, base: str) -> Reply:
    """/messages/{id}[/$value | /permanentDelete] and /mailFolders/{id}/(importMime |
    messages | messages/delta)."""
    seg = call.segments
    if seg[0] == "mailFolders":
        folder = find_folder(call, seg[1])
        tail = seg[2:]
        if tail == ["importMime"] and call.method == "POST":
            return import_mime(call, folder)
        if tail == ["messages"] and call.method == "GET":
            return list_messages(call, folder, base)
        if tail == ["messages"] and call.method == "POST":
            from .ops_create import create

            return create(call, folder, None)
        if tail == ["messages", "delta"] and call.method == "GET":
            return delta(call, folder, base)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{seg[-1]}'.")
    message = find_message(call, seg[1])
    tail = seg[2:]
    if not tail and call.method == "GET":
        select, expand = _select(call), _expand(call)
        return Reply(200, message_json(message, select, expand), type_name="message")
    if not tail and call.method == "PATCH":
        return patch_message(call, message)
    if tail == ["$value"] and call.method == "GET":
        return mime_value(call, message)
    if tail == ["permanentDelete"] and call.method == "POST":
        return permanent_delete(call, message)
    if tail[:1] == ["attachments"] and call.method == "POST":
        from .ops_create import create

        return create(call, None, message.id)
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{seg[-1]}'.")

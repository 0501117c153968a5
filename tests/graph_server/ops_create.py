"""v1.0's JSON create: POST /mailFolders/{id}/messages (a draft unless PR_MESSAGE_FLAGS is
set at creation without MSGFLAG_UNSENT, dated by PR_MESSAGE_DELIVERY_TIME and
PR_CLIENT_SUBMIT_TIME), attachments added by POST (under 3 MB) or by an upload session
(createUploadSession, then PUTs of byte ranges to the pre-authenticated URL)."""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .context import Call, GraphError, Reply, iso
from .ops_messages import (
    DELIVERY_TIME,
    MESSAGE_FLAGS,
    SUBMIT_TIME,
    _system_time,
    find_message,
    message_json,
)
from .store import Attachment, Folder, Mailbox, Message, new_id

if TYPE_CHECKING:
    from .server import GraphServer

MSGFLAG_READ = 0x1
MSGFLAG_UNSENT = 0x8
SMALL_ATTACHMENT = 3 * 1024 * 1024  # larger ones go through an upload session
MAX_CHUNK = 4 * 1024 * 1024  # bytes in one PUT of an upload session
_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass
class UploadSession:
    mailbox: Mailbox
    message_id: str
    item: dict[str, Any]
    received: bytearray = field(default_factory=bytearray)


def _check_room(call: Call, size: int) -> None:
    server, box = call.server, call.mailbox
    if server.max_message_size is not None and size > server.max_message_size:
        raise GraphError(413, "ErrorMessageSizeExceeded", "The message exceeds the size limit.")
    if box.quota_bytes is not None and box.usage() + size > box.quota_bytes:
        raise GraphError(507, "ErrorQuotaExceeded", "The mailbox has exceeded its quota.")


def _attachment(call: Call, data: dict[str, Any]) -> Attachment:
    if data.get("@odata.type") != "#microsoft.graph.fileAttachment":
        raise GraphError(400, "ErrorInvalidRequest", "Only file attachments are taken here.")
    content = base64.b64decode(str(data.get("contentBytes", "")))
    if len(content) > SMALL_ATTACHMENT:
        call.violation(f"a {len(content)}-byte attachment posted whole (over 3 MB: upload it)")
    return Attachment(
        str(data.get("name", "")),
        str(data.get("contentType", "application/octet-stream")),
        content,
        bool(data.get("isInline", False)),
        data.get("contentId"),
    )


def create_message(call: Call, folder: Folder) -> Reply:
    data: dict[str, Any] = dict(call.json) if isinstance(call.json, dict) else {}
    props = {p["id"]: str(p.get("value")) for p in data.pop("singleValueExtendedProperties", [])}
    attachments = [_attachment(call, a) for a in data.pop("attachments", [])]
    flags = int(props[MESSAGE_FLAGS]) if MESSAGE_FLAGS in props else MSGFLAG_UNSENT
    now = datetime.now(UTC)
    message = Message(new_id("M"), folder.id, b"", received=now, fields=data)
    message.attachments = attachments
    message.is_draft = bool(flags & MSGFLAG_UNSENT)
    message.is_read = bool(data.get("isRead", flags & MSGFLAG_READ))
    message.flag_status = str((data.get("flag") or {}).get("flagStatus", "notFlagged"))
    message.categories = list(data.get("categories") or [])
    if DELIVERY_TIME in props:
        message.received = _system_time(call, props[DELIVERY_TIME])
    if SUBMIT_TIME in props:
        message.sent = _system_time(call, props[SUBMIT_TIME])
    message.properties = {
        k: v for k, v in props.items() if k not in (DELIVERY_TIME, SUBMIT_TIME, MESSAGE_FLAGS)
    }
    _check_room(call, message.size)
    call.mailbox.messages[message.id] = message
    call.mailbox.touch(message)
    call.server.created += 1
    return Reply(201, message_json(message, None, []), type_name="message")


def add_attachment(call: Call, message: Message) -> Reply:
    data = call.json if isinstance(call.json, dict) else {}
    attachment = _attachment(call, data)
    _check_room(call, len(attachment.content))
    message.attachments.append(attachment)
    body = {
        "@odata.type": "#microsoft.graph.fileAttachment",
        "id": new_id("A"),
        "name": attachment.name,
        "contentType": attachment.content_type,
        "size": len(attachment.content),
        "isInline": attachment.is_inline,
    }
    return Reply(201, body, type_name="attachment")


def create_upload_session(call: Call, message: Message) -> Reply:
    data = call.json if isinstance(call.json, dict) else {}
    item = data.get("AttachmentItem") or {}
    size = int(item.get("size") or 0)
    if item.get("attachmentType") != "file" or size <= 0:
        raise GraphError(400, "ErrorInvalidRequest", "AttachmentItem needs type file and size.")
    if size < SMALL_ATTACHMENT:
        call.violation(f"an upload session for {size} bytes (under 3 MB: post it whole)")
    _check_room(call, size)
    token = secrets.token_urlsafe(16)
    call.server.upload_sessions[token] = UploadSession(call.mailbox, message.id, dict(item))
    body = {
        "uploadUrl": f"{call.server.url}/upload/{token}",
        "expirationDateTime": iso(datetime.now(UTC) + timedelta(hours=1)),
        "nextExpectedRanges": ["0-"],
    }
    return Reply(201, body, type_name="uploadSession")


def upload(server: GraphServer, token: str, headers: dict[str, str], body: bytes) -> Reply:
    """One PUT to an upload session's URL: no Authorization (the URL is the credential)."""
    session = server.upload_sessions.get(token)
    if session is None:
        raise GraphError(404, "ErrorItemNotFound", "The upload session does not exist.")
    if "authorization" in headers:
        server.record("PUT upload", "an Authorization header sent to a pre-authenticated URL")
    match = _RANGE.match(headers.get("content-range", ""))
    size = int(session.item.get("size") or 0)
    if match is None or int(match.group(3)) != size:
        server.record("PUT upload", f"bad Content-Range {headers.get('content-range')!r}")
        raise GraphError(400, "InvalidRange", "The Content-Range is not valid.")
    start, end = int(match.group(1)), int(match.group(2))
    if start != len(session.received) or end - start + 1 != len(body) or len(body) > MAX_CHUNK:
        server.record("PUT upload", f"range {start}-{end} of {len(body)} bytes out of order")
        raise GraphError(416, "InvalidRange", "The range is not the one expected next.")
    session.received += body
    if len(session.received) < size:
        answer = {"expirationDateTime": iso(datetime.now(UTC) + timedelta(hours=1)),
                  "nextExpectedRanges": [f"{len(session.received)}-"]}  # fmt: skip
        return Reply(200, answer, type_name="uploadSession")
    del server.upload_sessions[token]
    with server.store.lock:
        message = session.mailbox.messages.get(session.message_id)
        if message is not None:
            item = session.item
            message.attachments.append(
                Attachment(
                    str(item.get("name", "")),
                    str(item.get("contentType", "application/octet-stream")),
                    bytes(session.received),
                    bool(item.get("isInline", False)),
                    item.get("contentId"),
                )
            )
    return Reply(201)


def create(call: Call, folder: Folder | None, message_id: str | None) -> Reply:
    if folder is not None:
        return create_message(call, folder)
    assert message_id is not None
    message = find_message(call, message_id)
    if call.segments[-1] == "createUploadSession":
        return create_upload_session(call, message)
    return add_attachment(call, message)


def message_view(message: Message) -> dict[str, Any]:
    """What a test reads of a JSON-made message."""
    return {**message_json(message, None, []), **message.fields}

"""`--graph-api v1.0`: a message made from its MIME as v1.0 JSON, for tenants that allow
no beta call.  The MIME is read with Python's email package into Graph's properties
(subject, body, addresses, Message-ID, attachments), and PR_MESSAGE_FLAGS (read, and not
unsent: not a draft), PR_MESSAGE_DELIVERY_TIME and PR_CLIENT_SUBMIT_TIME are set at
creation, the only time Exchange takes them.  Attachments of 3 MB and more go up through
an upload session after the message is made; until they are all in, the message does not
carry the source key, so a message left half made is never taken for a copy.  What this
loses against importMime is in the README."""

from __future__ import annotations

import base64
import email
import email.policy
import json
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import getaddresses, parsedate_to_datetime
from typing import Any

from migrator.connectors.graph.client import GraphClient, graph_error
from migrator.connectors.graph.props import (
    DELIVERY_TIME,
    MESSAGE_FLAGS,
    SOURCE_KEY,
    SUBMIT_TIME,
    dump_key,
    graph_time,
)
from migrator.errors import MessageRefused, MigrationError
from migrator.gmail import keyword_label
from migrator.recognition import message_digest
from migrator.targets.base import AppendItem

SMALL = 3 * 1024 * 1024  # Graph: attachments under 3 MB in one request, larger by session
CHUNK = 9 * 320 * 1024  # bytes per PUT of an upload session: a multiple of 320 KiB
MSGFLAG_READ = 0x1
MSGFLAG_UNSENT = 0x8


@dataclass(frozen=True)
class FileAttachment:
    name: str
    content_type: str
    content: bytes
    is_inline: bool
    content_id: str | None

    def json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": self.name,
            "contentType": self.content_type,
            "contentBytes": base64.b64encode(self.content).decode("ascii"),
            "isInline": self.is_inline,
        }
        if self.content_id:
            body["contentId"] = self.content_id
        return body


def _recipients(message: EmailMessage, header: str) -> list[dict[str, Any]]:
    found = getaddresses([str(v) for v in message.get_all(header, [])])
    return [
        {"emailAddress": {"name": name, "address": address} if name else {"address": address}}
        for name, address in found
        if address
    ]


def _attachments(message: EmailMessage) -> list[FileAttachment]:
    found = []
    for part in message.iter_attachments():
        if part.get_content_type() == "message/rfc822":
            inner = part.get_payload(0)
            content = inner.as_bytes() if isinstance(inner, email.message.Message) else b""
            name = part.get_filename() or "message.eml"
        else:
            payload = part.get_payload(decode=True)
            content = payload if isinstance(payload, bytes) else b""
            name = part.get_filename() or "attachment"
        content_id = str(part.get("Content-ID", "")).strip().strip("<>") or None
        found.append(
            FileAttachment(
                name,
                part.get_content_type(),
                content,
                part.get_content_disposition() == "inline",
                content_id,
            )
        )
    return found


def message_body(item: AppendItem) -> tuple[dict[str, Any], list[FileAttachment]]:
    """The JSON of the message (without its attachments), and its attachments."""
    try:
        message = email.message_from_bytes(item.message, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        part = message.get_body(preferencelist=("html", "plain"))
        content = part.get_content() if part is not None else ""
        html = part is not None and part.get_content_type() == "text/html"
        attachments = _attachments(message)
    except (LookupError, ValueError, TypeError, AssertionError) as exc:
        raise MessageRefused(f"cannot be read as MIME for a v1.0 create: {exc}") from None
    lowered = {f.lower() for f in item.flags}
    flags = (MSGFLAG_READ if "\\seen" in lowered else 0) | (
        MSGFLAG_UNSENT if "\\draft" in lowered else 0
    )
    props = [{"id": MESSAGE_FLAGS, "value": str(flags)}]
    if item.internaldate is not None:
        props.append({"id": DELIVERY_TIME, "value": graph_time(item.internaldate)})
    sent = _date(message.get("Date")) or item.internaldate
    if sent is not None:
        props.append({"id": SUBMIT_TIME, "value": graph_time(sent)})
    body: dict[str, Any] = {
        "subject": str(message.get("Subject", "")),
        "body": {"contentType": "html" if html else "text", "content": str(content)},
        "toRecipients": _recipients(message, "To"),
        "ccRecipients": _recipients(message, "Cc"),
        "bccRecipients": _recipients(message, "Bcc"),
        "replyTo": _recipients(message, "Reply-To"),
        "isRead": "\\seen" in lowered,
        "singleValueExtendedProperties": props,
    }
    sender = _recipients(message, "From")
    if sender:
        body["from"] = sender[0]
    if message.get("Message-ID"):
        body["internetMessageId"] = str(message["Message-ID"]).strip()
    if "\\flagged" in lowered:
        body["flag"] = {"flagStatus": "flagged"}
    # A Gmail label's keyword (gmail.label_keyword) as the label's own name.
    keywords = [keyword_label(f) for f in item.flags if not f.startswith("\\")]
    if keywords:
        body["categories"] = keywords
    return body, attachments


def _date(value: object) -> Any:
    try:
        return parsedate_to_datetime(str(value)) if value else None
    except (TypeError, ValueError):
        return None


def create_message(
    client: GraphClient, folder: str, item: AppendItem, what: str
) -> tuple[dict[str, Any], bool]:
    """Make the message; (Graph's answer, whether its source key is still to be set)."""
    body, attachments = message_body(item)
    inline: list[FileAttachment] = []
    later: list[FileAttachment] = []
    room = SMALL
    for attachment in attachments:
        if len(attachment.content) < room:
            inline.append(attachment)
            room -= len(attachment.content)
        else:
            later.append(attachment)
    if inline:
        body["attachments"] = [a.json() for a in inline]
    if not later and item.key is not None:
        key = dump_key(item.key, message_digest(item.message))
        body["singleValueExtendedProperties"].append({"id": SOURCE_KEY, "value": key})
    data = json.dumps(body).encode("utf-8")
    client.reserve(len(data))
    answer = client.request("POST", f"/mailFolders/{folder}/messages", body=body, what=what)
    if not answer.ok:
        raise graph_error(answer, what)
    made: dict[str, Any] = answer.body
    try:
        for attachment in later:
            _attach(client, str(made["id"]), attachment, what)
    except MigrationError:
        # Never leave a message without all its attachments: it would stand for the
        # source's on a rerun (by its MIME).  If this fails too, the next pass finds it
        # without the source key and makes the message again beside it.
        client.request("POST", f"/messages/{made['id']}/permanentDelete", what=what)
        raise
    return made, bool(later)


def _attach(client: GraphClient, message_id: str, attachment: FileAttachment, what: str) -> None:
    size = len(attachment.content)
    if size < SMALL:
        client.reserve(size)
        client.call(
            "POST", f"/messages/{message_id}/attachments", body=attachment.json(), what=what
        )
        return
    item: dict[str, Any] = {
        "attachmentType": "file",
        "name": attachment.name,
        "size": size,
        "contentType": attachment.content_type,
        "isInline": attachment.is_inline,
    }
    if attachment.content_id:
        item["contentId"] = attachment.content_id
    session = client.call(
        "POST",
        f"/messages/{message_id}/attachments/createUploadSession",
        body={"AttachmentItem": item},
        what=what,
    )
    url = str(session["uploadUrl"])
    for start in range(0, size, CHUNK):
        chunk = attachment.content[start : start + CHUNK]
        client.reserve(len(chunk))
        answer = client.put_range(url, chunk, start, size, what=what)
        if not answer.ok:
            raise graph_error(answer, f"{what}, attachment {attachment.name!r}")

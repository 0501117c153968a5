"""Mailboxes of the test Graph server, in memory: folders (the well-known ones and child
folders), messages with their MIME as imported, read state, flag, categories, received
time and extended properties; inbox rules; a quota and a change log for delta queries."""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

# The well-known folder names Graph accepts in place of an id (mailFolder resource type).
WELL_KNOWN = (
    "inbox", "sentitems", "deleteditems", "drafts", "junkemail", "archive", "outbox",
    "conversationhistory", "clutter", "scheduled", "searchfolders", "syncissues",
    "recoverableitemsdeletions",
)  # fmt: skip
DISPLAY_NAMES = {
    "inbox": "Inbox", "sentitems": "Sent Items", "deleteditems": "Deleted Items",
    "drafts": "Drafts", "junkemail": "Junk Email", "archive": "Archive", "outbox": "Outbox",
}  # fmt: skip
ROOT = "msgfolderroot"

_ids = itertools.count(1)


def new_id(kind: str) -> str:
    # Graph ids are opaque base64-ish strings; these are unique and URL-safe.
    return f"AAMk{kind}{next(_ids):08d}AAA="


@dataclass
class Folder:
    id: str
    name: str
    parent_id: str | None
    well_known: str | None = None


@dataclass
class Attachment:
    name: str
    content_type: str
    content: bytes
    is_inline: bool = False
    content_id: str | None = None


@dataclass
class Message:
    id: str
    folder_id: str
    mime: bytes
    received: datetime
    sent: datetime | None = None
    is_read: bool = False
    is_draft: bool = False
    flag_status: str = "notFlagged"
    categories: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)  # extended property id -> value
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    change: int = 0  # the mailbox's change counter when last changed (delta)
    # A message made from JSON (v1.0 create): its properties and attachments, no MIME.
    fields: dict[str, Any] = field(default_factory=dict)
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def size(self) -> int:
        fields = len(repr(self.fields)) if self.fields else 0
        return len(self.mime) + fields + sum(len(a.content) for a in self.attachments)


@dataclass
class Mailbox:
    address: str
    quota_bytes: int | None = None
    folders: dict[str, Folder] = field(default_factory=dict)
    messages: dict[str, Message] = field(default_factory=dict)
    rules: dict[str, dict[str, Any]] = field(default_factory=dict)
    removed: list[tuple[int, str, str]] = field(default_factory=list)  # (change, folder, id)
    changes: int = 0
    delta_generation: int = 0  # in every delta token: one of another generation is Gone

    def forget_delta_states(self) -> None:
        """Refuse every delta token given so far (410 syncStateNotFound)."""
        self.delta_generation += 1

    def usage(self) -> int:
        return sum(m.size for m in self.messages.values())

    def touch(self, message: Message) -> None:
        self.changes += 1
        message.change = self.changes

    def remove(self, message_id: str) -> None:
        """Delete a message, noted for delta queries."""
        message = self.messages.pop(message_id)
        self.changes += 1
        self.removed.append((self.changes, message.folder_id, message_id))

    def folder(self, ref: str) -> Folder | None:
        """A folder by id or well-known name (case-insensitive, as Graph takes them)."""
        if ref in self.folders:
            return self.folders[ref]
        lowered = ref.lower()
        return next((f for f in self.folders.values() if f.well_known == lowered), None)

    def children(self, folder_id: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def in_folder(self, folder_id: str) -> list[Message]:
        return [m for m in self.messages.values() if m.folder_id == folder_id]


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.mailboxes: dict[str, Mailbox] = {}

    def add_mailbox(self, address: str, quota_bytes: int | None = None) -> Mailbox:
        box = Mailbox(address, quota_bytes)
        root = Folder(new_id("F"), "Top of Information Store", None, ROOT)
        box.folders[root.id] = root
        for name in WELL_KNOWN:
            folder = Folder(new_id("F"), DISPLAY_NAMES.get(name, name), root.id, name)
            box.folders[folder.id] = folder
        with self.lock:
            self.mailboxes[address.lower()] = box
        return box

    def get(self, address: str) -> Mailbox | None:
        return self.mailboxes.get(address.lower())

    # -- what tests look at ---------------------------------------------------------------

    def folder_at(self, address: str, path: tuple[str, ...]) -> Folder | None:
        """A folder by path from a well-known one: ("inbox",), ("msgfolderroot", "A", "B")."""
        box = self.mailboxes[address.lower()]
        current = box.folder(path[0])
        for name in path[1:]:
            if current is None:
                return None
            current = next(
                (f for f in box.children(current.id) if f.name.lower() == name.lower()), None
            )
        return current

    def messages_at(self, address: str, path: tuple[str, ...]) -> list[Message]:
        folder = self.folder_at(address, path)
        assert folder is not None, f"{address} has no folder {'/'.join(path)}"
        return self.mailboxes[address.lower()].in_folder(folder.id)

    def all_messages(self, address: str) -> list[Message]:
        return list(self.mailboxes[address.lower()].messages.values())


def mime_dates(mime: bytes) -> tuple[datetime | None, datetime | None]:
    """(received, sent) as Exchange's MIME conversion reads them: the date of the topmost
    Received header, and the Date header."""
    head = mime.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("latin-1")
    unfolded = head.replace("\r\n", "\n").replace("\n ", " ").replace("\n\t", " ")
    received = sent = None
    for line in unfolded.split("\n"):
        name, _, value = line.partition(":")
        if name.lower() == "received" and received is None and ";" in value:
            received = _date(value.rsplit(";", 1)[1])
        elif name.lower() == "date" and sent is None:
            sent = _date(value)
    return received, sent


def header(mime: bytes, name: str) -> str | None:
    """The first `name` header field's value (unfolded), or None."""
    head = mime.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0].decode("latin-1")
    for line in head.replace("\n ", " ").replace("\n\t", " ").split("\n"):
        field, _, value = line.partition(":")
        if field.strip().lower() == name:
            return value.strip()
    return None


def _date(text: str) -> datetime | None:
    try:
        value = parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)

"""Mailbox state in memory: mailboxes keyed by SMTP address, each a folder tree of items.

Ids are opaque to clients, as in Exchange, but ours encode the mailbox so that a FolderId or ItemId
alone says whose mailbox a request touches (the access check needs that)."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import itertools
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from lxml import etree

# DistinguishedFolderId -> (parent, FolderClass, DisplayName). Order matters: parents first.
DISTINGUISHED: dict[str, tuple[str | None, str | None, str]] = {
    "root": (None, None, "Root"),
    "msgfolderroot": ("root", None, "Top of Information Store"),
    "inbox": ("msgfolderroot", "IPF.Note", "Inbox"),
    "sentitems": ("msgfolderroot", "IPF.Note", "Sent Items"),
    "deleteditems": ("msgfolderroot", "IPF.Note", "Deleted Items"),
    "drafts": ("msgfolderroot", "IPF.Note", "Drafts"),
    "junkemail": ("msgfolderroot", "IPF.Note", "Junk Email"),
    "outbox": ("msgfolderroot", "IPF.Note", "Outbox"),
    "journal": ("msgfolderroot", "IPF.Journal", "Journal"),
    "notes": ("msgfolderroot", "IPF.StickyNote", "Notes"),
    "calendar": ("msgfolderroot", "IPF.Appointment", "Calendar"),
    "contacts": ("msgfolderroot", "IPF.Contact", "Contacts"),
    "tasks": ("msgfolderroot", "IPF.Task", "Tasks"),
}

_counter = itertools.count(1)


def new_id(kind: str, smtp: str) -> str:
    """An opaque id that still names its mailbox: base64 of ``kind|smtp|serial``."""
    return base64.b64encode(f"{kind}|{smtp}|{next(_counter)}".encode()).decode()


def id_mailbox(opaque: str) -> str | None:
    """The mailbox an id from :func:`new_id` belongs to, or None for a malformed id."""
    try:
        kind, smtp, _ = base64.b64decode(opaque, validate=True).decode().split("|")
    except ValueError:
        return None
    return smtp if kind in ("f", "i") else None


@dataclass
class Item:
    """One stored item. ``props`` keeps the request's own child elements (Subject, Start, ...)
    of non-MIME items, so GetItem can answer with what CreateItem sent."""

    id: str
    folder_id: str
    item_class: str
    mime: bytes = b""
    is_read: bool = False
    received: datetime = field(default_factory=lambda: datetime.now(UTC))
    # ExtendedFieldURI identity (see itemxml.extended_key) -> the t:ExtendedProperty as sent
    extended: dict[tuple[tuple[str, str], ...], etree._Element] = field(default_factory=dict)
    props: dict[str, etree._Element] = field(default_factory=dict)
    changekey: str = "CK1"

    @property
    def size(self) -> int:
        return len(self.mime) or sum(len(etree.tostring(p)) for p in self.props.values())

    @property
    def headers(self) -> email.message.Message:
        return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(self.mime)

    @property
    def internet_message_id(self) -> str | None:
        value = self.headers.get("Message-ID")
        return str(value).strip() if value else None

    @property
    def subject(self) -> str | None:
        value = self.headers.get("Subject")
        return str(value) if value is not None else None

    @property
    def sent(self) -> datetime | None:
        value = self.headers.get("Date")
        try:
            return parsedate_to_datetime(str(value)) if value else None
        except (TypeError, ValueError):
            return None


@dataclass
class Folder:
    id: str
    parent_id: str | None
    name: str
    folder_class: str | None
    distinguished: str | None = None
    changekey: str = "FCK1"


@dataclass
class Rule:
    id: str
    display_name: str
    element: etree._Element  # the t:Rule as created, RuleId filled in


@dataclass
class Mailbox:
    smtp: str
    display_name: str
    quota_bytes: int | None = None
    folders: dict[str, Folder] = field(default_factory=dict)
    items: dict[str, Item] = field(default_factory=dict)
    rules: list[Rule] = field(default_factory=list)
    # SyncFolderItems: SyncState -> the folder as that state saw it (ops_sync.Snapshot);
    # cleared, every state is refused (ErrorInvalidSyncStateData) as Exchange's expire.
    sync_states: dict[str, dict[str, tuple[bool, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for did, (parent, folder_class, name) in DISTINGUISHED.items():
            parent_id = self.distinguished(parent).id if parent else None
            fid = new_id("f", self.smtp)
            self.folders[fid] = Folder(fid, parent_id, name, folder_class, distinguished=did)

    def distinguished(self, did: str) -> Folder:
        for f in self.folders.values():
            if f.distinguished == did:
                return f
        raise KeyError(did)

    def children(self, folder_id: str) -> list[Folder]:
        return [f for f in self.folders.values() if f.parent_id == folder_id]

    def descendants(self, folder_id: str) -> list[Folder]:
        out: list[Folder] = []
        for child in self.children(folder_id):
            out.append(child)
            out.extend(self.descendants(child.id))
        return out

    def items_in(self, folder_id: str) -> list[Item]:
        return [i for i in self.items.values() if i.folder_id == folder_id]

    def folder_at(self, path: tuple[str, ...]) -> Folder:
        """The folder at `path`: a distinguished id, then display names below it."""
        folder = self.distinguished(path[0])
        for name in path[1:]:
            (folder,) = [f for f in self.children(folder.id) if f.name == name]
        return folder

    def deliver(self, mime: bytes) -> Item:
        """A message put straight into the Inbox, as the mail system would deliver it."""
        item = Item(new_id("i", self.smtp), self.distinguished("inbox").id, "IPM.Note", mime=mime)
        self.items[item.id] = item
        return item

    @property
    def used_bytes(self) -> int:
        return sum(i.size for i in self.items.values())


class Store:
    """All mailboxes of the server. One lock for everything: the tests need correctness, not
    concurrency, and the HTTP server is threaded."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.mailboxes: dict[str, Mailbox] = {}

    def add_mailbox(self, smtp: str, *, display_name: str | None = None) -> Mailbox:
        with self.lock:
            key = smtp.lower()
            if key not in self.mailboxes:
                self.mailboxes[key] = Mailbox(smtp, display_name or smtp.split("@")[0])
            return self.mailboxes[key]

    def get(self, smtp: str) -> Mailbox | None:
        return self.mailboxes.get(smtp.lower())

    def __getitem__(self, smtp: str) -> Mailbox:
        return self.mailboxes[smtp.lower()]

    def messages(self, smtp: str, folder_name: str) -> list[Item]:
        """Items of the first folder named ``folder_name`` (or distinguished id): for assertions."""
        box = self[smtp]
        for f in box.folders.values():
            if folder_name in (f.name, f.distinguished):
                return box.items_in(f.id)
        raise KeyError(folder_name)

    def items_at(self, smtp: str, path: tuple[str, ...]) -> list[Item]:
        """Items of the folder at `path` (Mailbox.folder_at): for assertions."""
        box = self[smtp]
        return box.items_in(box.folder_at(path).id)

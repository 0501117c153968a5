"""The protocol every target adapter (IMAP, EWS) implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from migrator.errors import MessageRefused, QuotaExceeded
from migrator.foldermap import TargetFolder
from migrator.recognition import TargetCopy
from migrator.syncstate import Placement


@dataclass(frozen=True)
class QuotaInfo:
    limit: int | None  # bytes; None when the server sets no limit or cannot say
    usage: int | None  # bytes in use; None when the server cannot say
    unlimited: bool = False  # the server says no limit applies (not merely that it cannot say)


UNKNOWN_QUOTA = QuotaInfo(limit=None, usage=None)
"""A target that cannot say its quota (or was not asked: a pass with nothing to send)."""


@dataclass(frozen=True)
class AppendItem:
    folder: str  # the target's name, from open_folder
    message: bytes
    flags: tuple[str, ...]  # IMAP words: \Seen, \Flagged, ..., keywords
    internaldate: datetime | None
    key: str | None = None  # its content key (migrator.recognition), kept where it helps


Outcome = MessageRefused | QuotaExceeded | None
"""Per item: None (stored), MessageRefused (skip it, go on), QuotaExceeded (the target
is full: this item and every later one in the batch were not stored)."""


class MailboxTarget(Protocol):
    """Writes one mailbox.  Library errors never escape: adapters raise migrator.errors
    (TransientError for anything worth a reconnect, after which a new pass re-reads
    index() and so never sends twice what a broken batch did store)."""

    batch_size: int  # items per append_batch call; the copier also caps a batch's bytes
    throttled_seconds: float  # time spent waiting because the server asked us to back off

    def open_folder(self, folder: TargetFolder) -> str:
        """The target's own name for `folder`, created (idempotently) if missing."""
        ...

    def index(self, name: str) -> list[TargetCopy]:
        """Every message already in folder `name`: its id, content key, system flags and
        date (see migrator.recognition)."""
        ...

    def digests(self, name: str, copies: Sequence[TargetCopy]) -> dict[str, str]:
        """The whole-message digest of each of `copies` of folder `name`, by copy id;
        asked only for copies that share a content key with another message."""
        ...

    def quota(self) -> QuotaInfo: ...

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        """Store the items in order; one outcome per item."""
        ...

    def session(self) -> MailboxTarget | None:
        """Another connection to the same mailbox, knowing the folders this one opened and
        indexed, for a copy over several connections; None where the adapter allows one."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class PlacingTarget(Protocol):
    """A target that says where each message of the last `append_batch` went (IMAP:
    RFC 4315 APPENDUID), so the ledger can find the copy again."""

    def placed(self) -> list[Placement | None]:
        """One per item of the last append_batch: where it went, or None (not stored,
        or the server did not say)."""
        ...


@runtime_checkable
class TogetherTarget(Protocol):
    """A target that writes a batch of several folders in one round trip (IMAP: each
    folder's MULTIAPPEND written before the answers are read) and can write the next
    batch before this one's answers are in; for batches the quota certainly has room
    for: a quota stop inside one may leave a later message stored."""

    def send_together(self, items: Sequence[AppendItem]) -> Any:
        """Write the batch without waiting for its answers; what land_together takes."""
        ...

    def land_together(self, sent: Any) -> list[Outcome]:
        """The outcomes of a batch send_together wrote (as append_batch's), batches in
        the order they were sent."""
        ...


@runtime_checkable
class GrowingBatchTarget(Protocol):
    """A target whose cost is per command more than per message (IMAP: each APPEND is a
    transaction, which in a folder of 700,000 messages costs Dovecot some 13 ms however
    few messages it holds): a batch of `batch_size` messages under `small_batch_bytes`
    takes more of them, up to `small_batch_size`."""

    small_batch_size: int
    small_batch_bytes: int


@runtime_checkable
class SyncTarget(Protocol):
    """The hooks incremental passes use at the target (connectors/base.py: a target
    without them says so through `Connector.syncs_flags`)."""

    def set_flags(self, changes: Sequence[tuple[Placement, tuple[str, ...]]]) -> int:
        """Give each copy these flags (IMAP words, keywords too), replacing its own; how
        many copies were found and changed."""
        ...

    def remove(self, placements: Sequence[Placement]) -> int:
        """Delete these copies (none other); how many were there."""
        ...

    def rename_folder(self, old: str, new: TargetFolder) -> str | None:
        """Rename target folder `old` to the target's name for `new`, where that does not
        exist yet; the new name, or None where it cannot (the copies stay in `old`)."""
        ...

    def mark(self, name: str) -> str | None:
        """A mark of what folder `name` holds now (IMAP: UIDVALIDITY and UIDNEXT), for
        `index_since`; None where the target has none."""
        ...

    def index_since(self, name: str, mark: str) -> list[TargetCopy] | None:
        """The index of the messages that came to folder `name` after `mark` was taken;
        None where the mark no longer holds (the caller indexes the whole folder)."""
        ...


@runtime_checkable
class IndexesTogether(Protocol):
    """A SyncTarget that reads many folders' `index_since` at once (IMAP: every folder's
    SELECT and FETCH written before any answer is read, where one by one they cost a
    round trip or two each)."""

    def indexes_since(self, marks: Mapping[str, str]) -> dict[str, list[TargetCopy] | None]:
        """`index_since` of each folder (name -> its mark)."""
        ...

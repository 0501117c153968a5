"""The protocol every target adapter (IMAP, EWS) implements."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from migrator.foldermap import TargetFolder
from migrator.plan import MessageKey


@dataclass(frozen=True)
class QuotaInfo:
    limit: int | None  # bytes; None when the server sets no limit
    usage: int | None  # bytes in use; None when the server cannot say


class MailboxTarget(Protocol):
    """Writes one mailbox.  Library errors never escape: adapters raise migrator.errors
    (QuotaExceeded for a full mailbox, MessageRefused for one bad message,
    TransientError for anything worth a reconnect)."""

    def open_folder(self, folder: TargetFolder) -> str:
        """The target's own name for `folder`, created (idempotently) if missing."""
        ...

    def index(self, name: str) -> Counter[MessageKey]:
        """Keys of the messages already in folder `name`, counted."""
        ...

    def quota(self) -> QuotaInfo: ...

    def append(
        self, name: str, message: bytes, flags: tuple[str, ...], internaldate: datetime | None
    ) -> None: ...

    def close(self) -> None: ...

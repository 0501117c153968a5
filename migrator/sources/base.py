"""The protocol every source adapter (IMAP, POP3, EWS) implements."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from migrator.plan import MessageRef


@dataclass(frozen=True)
class SourceFolder:
    name: str  # the folder's name on the source server (decoded, full path)
    path: tuple[str, ...]  # components relative to the mailbox root, for the folder map
    special_use: frozenset[str] = frozenset()  # RFC 6154 flags, e.g. "\\Sent"

    @property
    def is_all_mail(self) -> bool:
        """RFC 6154 \\All: a view of every message (Gmail's All Mail), where mail no other
        folder holds (Gmail's archived mail) is found only; see copier."""
        return any(flag.lower() == "\\all" for flag in self.special_use)


class MailboxSource(Protocol):
    """Reads one mailbox.  Library errors never escape: adapters raise migrator.errors."""

    def list_folders(self) -> list[SourceFolder]: ...

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        """Every message of the folder with uid, date, size, flags and key; no bodies."""
        ...

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """The bytes of each message, in the order given, exactly as the server holds them.
        A message the server does not send is left out; the copier names it."""
        ...

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """The start of each message, holding at least its whole header block and the
        empty line after it (recognition.header_end finds it), or else the whole message;
        read only where a target folder already holds mail, to recognise it there."""
        ...

    def session(self) -> MailboxSource | None:
        """Another connection to the same mailbox, able to `fetch` what this one listed,
        for a copy over several connections; None where the protocol or adapter allows
        one only (POP3 locks the maildrop)."""
        ...

    def close(self) -> None: ...

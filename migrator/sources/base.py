"""The protocol every source adapter (IMAP, POP3, EWS) implements."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from migrator.plan import MessageRef
from migrator.syncstate import FolderChanges, FolderState


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


@runtime_checkable
class IncrementalSource(Protocol):
    """A source that can say what changed in a folder since a pass read it (IMAP: RFC 7162
    CONDSTORE/QRESYNC where offered, else UIDNEXT and a UID diff).  A source without it
    is listed whole by every pass, and recognition keeps its copies single."""

    def listed_state(self, name: str) -> FolderState | None:
        """The state of folder `name` as `list_messages` last found it (None: not listed)."""
        ...

    def folder_state(self, folder: SourceFolder) -> FolderState:
        """The folder's state now (a SELECT; no message is read)."""
        ...

    def changes(self, folder: SourceFolder, since: FolderState) -> FolderChanges | None:
        """What changed since `since`; None when the folder's UIDVALIDITY changed (its
        UIDs mean other messages now: the caller lists it whole and recognises)."""
        ...


@runtime_checkable
class StatesWithFolders(Protocol):
    """An IncrementalSource that reads every folder's state in the round trip that lists
    the folders (IMAP: LIST and LIST-STATUS written together), for an incremental pass."""

    def list_folders_with_states(self) -> list[SourceFolder]:
        """`list_folders`, every folder's state read with it for `changes`."""
        ...


@runtime_checkable
class ChangesTogether(Protocol):
    """An IncrementalSource that reads many folders' changes at once (IMAP: every
    folder's commands written before any answer is read, where one by one they cost a
    round trip each)."""

    def changes_of(
        self, asked: Sequence[tuple[SourceFolder, FolderState]]
    ) -> list[FolderChanges | None]:
        """`changes` of each (folder, since), in the order asked."""
        ...


@runtime_checkable
class ListingManySource(Protocol):
    """A source that lists many folders in fewer round trips than one folder after another
    (IMAP: the commands of several folders sent before their answers are read)."""

    def list_many(
        self, folders: Sequence[SourceFolder]
    ) -> Iterator[tuple[SourceFolder, list[MessageRef]]]:
        """`list_messages` of each of `folders`, in order, as each is read; an error is
        raised at its folder's turn, as `list_messages` would raise it."""
        ...


@runtime_checkable
class EarlySessionSource(Protocol):
    """A source whose `session` carries nothing of its listing (IMAP: the UIDs are the
    server's), so that more connections can be opened while it lists, and that can say
    beforehand about how many messages it holds (whether more connections would help)."""

    def messages_held(self) -> int | None:
        """About how many messages the mailbox holds, without listing it (None: unknown);
        `session` may be called before and while this source lists."""
        ...

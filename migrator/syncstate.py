"""The values an incremental pass works with (pure): which pass a task runs, what a source
folder looked like when it was last read, what changed in it since, and where each copy
went at the target (the ledger).

A mailbox is copied once (`migrator run`/`enqueue`), kept in step by incremental passes
(`migrator sync`) while its users still work at the source, and finished by a final pass
(`migrator complete`) after the MX switch.  Each pass records, per source folder, its
UIDVALIDITY, UIDNEXT and (RFC 7162 CONDSTORE) HIGHESTMODSEQ as the pass read them, so the
next one asks only for what changed since.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from migrator.errors import BadJob
from migrator.plan import MessageRef

PASS_VERSION = 1


class PassKind(enum.StrEnum):
    COPY = "copy"  # the first pass (run, enqueue, resume): the whole mailbox
    SYNC = "sync"  # an incremental pass: only what changed since the last one
    FINAL = "final"  # the last incremental pass, after the MX switch: then `completed`


@dataclass(frozen=True)
class PassRequest:
    """What a task is asked to do with a mailbox, carried beside (not in) its sealed job."""

    kind: PassKind = PassKind.COPY
    propagate_deletes: bool = False  # remove at the target what the source deleted
    forward_after: bool = False  # FINAL: switch forwarding on once the mailbox is completed

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": PASS_VERSION,
                "kind": self.kind.value,
                "propagate_deletes": self.propagate_deletes,
                "forward_after": self.forward_after,
            }
        )

    @classmethod
    def from_json(cls, text: str | None) -> PassRequest:
        if not text:
            return cls()
        try:
            data = json.loads(text)
            if data.get("version") != PASS_VERSION:
                raise BadJob(f"a pass request of version {data.get('version')!r}")
            return cls(
                kind=PassKind(data["kind"]),
                propagate_deletes=bool(data.get("propagate_deletes")),
                forward_after=bool(data.get("forward_after")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadJob(f"a pass request that cannot be read: {exc}") from exc


@dataclass(frozen=True)
class FolderState:
    """A source folder as a pass read it: RFC 3501 UIDVALIDITY and UIDNEXT, and RFC 7162
    HIGHESTMODSEQ where the server keeps mod-sequences (None where it does not).  A source
    whose server keeps the state of a client's reading itself (EWS SyncFolderItems'
    SyncState, Graph's messages/delta deltaLink) holds it in `sync`, opaque and possibly
    long (kept out of reprs, hence out of log lines), with a stable number of the
    folder's id as `uidvalidity` and no UIDNEXT."""

    uidvalidity: int
    uidnext: int
    modseq: int | None = None
    sync: str | None = field(default=None, repr=False)

    def to_text(self) -> str:
        fields: list[object] = [self.uidvalidity, self.uidnext, self.modseq]
        if self.sync is not None:
            fields.append(self.sync)  # a fourth field: three-field texts read as before
        return json.dumps(fields)

    @classmethod
    def from_text(cls, text: str) -> FolderState | None:
        try:
            uidvalidity, uidnext, modseq, *rest = json.loads(text)
            sync = rest[0] if rest else None
            if len(rest) > 1 or not (sync is None or isinstance(sync, str)):
                return None
            return cls(
                int(uidvalidity), int(uidnext), None if modseq is None else int(modseq), sync
            )
        except (ValueError, TypeError):
            return None  # written by something else: the folder is listed whole


@dataclass(frozen=True)
class FolderChanges:
    """What changed in one source folder since `FolderState`: the messages above its old
    UIDNEXT (listed as a full listing lists them), the flags of older ones, and the UIDs
    gone.  `all_flags`: `flags` holds every older message (no CONDSTORE: the caller
    compares with what it recorded) rather than the changed ones only; `present`: every
    UID still there (no QRESYNC: what is not in it is gone), else None."""

    state: FolderState  # the folder as this reading found it (the next pass starts here)
    new: list[MessageRef] = field(default_factory=list)
    flags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # uid -> flags
    all_flags: bool = False
    vanished: frozenset[str] = frozenset()  # RFC 7162 VANISHED (EARLIER)
    present: AbstractSet[str] | None = None


@dataclass(frozen=True)
class Placement:
    """Where a copy is at the target: the target's folder, its UIDVALIDITY (0 where the
    target has none) and the copy's own id there (an IMAP UID, an Exchange ItemId)."""

    folder: str
    uidvalidity: int
    id: str


@dataclass(frozen=True)
class LedgerEntry:
    """One source message's copy as the ledger keeps it: where it is, the source flags it
    was last given, whether we put it there (False: it was found there already), and
    whether the source message is gone (deleted there; the copy is kept until a pass is
    told to --propagate-deletes)."""

    placement: Placement
    flags: tuple[str, ...]
    ours: bool
    gone: bool = False

    def to_text(self) -> str:
        p = self.placement
        return json.dumps(
            [p.folder, p.uidvalidity, p.id, list(self.flags), int(self.ours), int(self.gone)]
        )

    @classmethod
    def from_text(cls, text: str) -> LedgerEntry | None:
        try:
            folder, uidvalidity, ident, flags, ours, *rest = json.loads(text)
            return cls(
                Placement(str(folder), int(uidvalidity), str(ident)),
                tuple(flags),
                ours == 1,
                bool(rest and rest[0] == 1),
            )
        except (ValueError, TypeError):
            return None


Member = tuple[str, int, str]  # (source folder, UIDVALIDITY, message id): a checkpoint


@runtime_checkable
class Ledger(Protocol):
    """What the passes of one mailbox remember beside its checkpoints (state.RedisProgress
    keeps it in Redis, beside them): source folder states, where each copy went, and the
    target folders' marks (what a target index read last)."""

    def checkpoints(self) -> dict[Member, str | None]: ...

    def fence(self) -> None: ...

    def folder_states(self) -> dict[str, FolderState]: ...

    def save_folder_states(self, states: Mapping[str, FolderState]) -> None: ...

    def entries(self, folder: str | None) -> dict[Member, LedgerEntry]:
        """The ledger of one source folder (every UIDVALIDITY it had); None: of all."""
        ...

    def each_entry(self) -> Iterator[tuple[Member, LedgerEntry]]:
        """The whole ledger one entry at a time, none of it held: a first pass over a
        million messages leaves a million entries."""
        ...

    def sources_of(self, target_folder: str) -> set[str]:
        """The source folders with copies in `target_folder` (reads the whole ledger)."""
        ...

    def entries_of(self, members: Sequence[Member]) -> dict[Member, LedgerEntry]:
        """The ledger entries of these messages (those it has)."""
        ...

    def checkpoints_of(self, members: Sequence[Member]) -> dict[Member, str | None]:
        """The checkpoints of these messages (those that have one), as checkpoints() reads
        them: an incremental pass reads its new messages' only."""
        ...

    def update(self, changed: Sequence[tuple[Member, LedgerEntry]]) -> None:
        """Write these entries anew (flags given, source message gone), fenced."""
        ...

    def forget(self, members: Sequence[Member]) -> None:
        """Drop the checkpoints and ledger entries of messages removed at the target
        (fenced: refused with LockLost when another worker holds the mailbox)."""
        ...

    def rename_folder(self, old: str, new: str, target_folder: str | None) -> int:
        """Move the checkpoints and ledger of source folder `old` to `new` (fenced), with
        their copies now in `target_folder` where the target renamed its folder too, and
        its folder state (without its mod-sequence)."""
        ...

    def target_marks(self) -> dict[str, str]: ...

    def save_target_marks(self, marks: Mapping[str, str]) -> None: ...

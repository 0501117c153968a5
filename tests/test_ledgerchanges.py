"""migrator.ledgerchanges: the source's changes onto the copies the ledger knows, the whole
ledger read one entry at a time (a fake of our own Ledger; the Redis one is in test_state
and the passes over real servers in test_syncpass)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest

from migrator import ledgerchanges
from migrator.ledgerchanges import apply_changes
from migrator.syncstate import (
    FolderChanges,
    FolderState,
    LedgerEntry,
    Member,
    PassRequest,
    Placement,
)

UV = 7


class WholeLedger:
    """A ledger that hands out its entries one at a time and refuses to be read whole."""

    def __init__(self, entries: dict[Member, LedgerEntry]) -> None:
        self.entries_held = entries
        self.updated: list[tuple[Member, LedgerEntry]] = []
        self.forgotten: list[Member] = []
        self.scans = 0

    def entries(self, folder: str | None) -> dict[Member, LedgerEntry]:
        raise AssertionError("the whole ledger held at once")

    def each_entry(self) -> Iterator[tuple[Member, LedgerEntry]]:
        self.scans += 1
        yield from self.entries_held.items()

    def entries_of(self, members: Sequence[Member]) -> dict[Member, LedgerEntry]:
        return {m: self.entries_held[m] for m in members if m in self.entries_held}

    def update(self, changed: Sequence[tuple[Member, LedgerEntry]]) -> None:
        self.updated += changed

    def forget(self, members: Sequence[Member]) -> None:
        self.forgotten += members

    def fence(self) -> None:
        pass


class CountingLedger(WholeLedger):
    def __init__(self, entries: dict[Member, LedgerEntry]) -> None:
        super().__init__(entries)
        self.asked: list[list[Member]] = []

    def entries_of(self, members: Sequence[Member]) -> dict[Member, LedgerEntry]:
        if members:
            self.asked.append(list(members))
        return super().entries_of(members)


class FlagTarget:
    def __init__(self) -> None:
        self.flagged: list[tuple[Placement, tuple[str, ...]]] = []
        self.removed: list[Placement] = []

    def set_flags(self, changes: Sequence[tuple[Placement, tuple[str, ...]]]) -> int:
        self.flagged += changes
        return len(changes)

    def remove(self, placements: Sequence[Placement]) -> int:
        self.removed += placements
        return len(placements)

    def rename_folder(self, old: str, new: object) -> str | None:
        return None

    def mark(self, name: str) -> str | None:
        return None

    def index_since(self, name: str, mark: str) -> None:
        return None


def _entry(
    uid: str, flags: tuple[str, ...], *, ours: bool = True, gone: bool = False
) -> LedgerEntry:
    return LedgerEntry(Placement("INBOX", 1, "t" + uid), flags, ours, gone)


def _ledger() -> WholeLedger:
    return WholeLedger(
        {
            ("INBOX", UV, "1"): _entry("1", ("\\Seen",)),  # unchanged
            ("INBOX", UV, "2"): _entry("2", ()),  # read since
            ("INBOX", UV, "3"): _entry("3", ("\\Seen",)),  # deleted at the source
            ("INBOX", UV, "4"): _entry("4", (), gone=True),  # gone in an earlier pass
            ("INBOX", UV - 1, "2"): _entry("9", ()),  # the folder's earlier UIDVALIDITY
            ("Sent", UV, "1"): _entry("1", ()),  # a folder this pass did not read
        }
    )


def _whole_listing() -> dict[str, FolderChanges]:
    flags = {"1": ("\\Seen",), "2": ("\\Seen", "\\Answered")}
    return {
        "INBOX": FolderChanges(
            FolderState(UV, 10), flags=flags, all_flags=True, present=flags.keys()
        )
    }


def test_a_whole_listing_reads_the_ledger_once_an_entry_at_a_time_and_keeps_what_changes() -> None:
    ledger, target = _ledger(), FlagTarget()
    moved = apply_changes(target, ledger, _whole_listing(), PassRequest())  # type: ignore[arg-type]
    assert ledger.scans == 1
    assert (moved.flags, moved.vanished, moved.deleted) == (1, 1, 0)
    assert target.flagged == [(Placement("INBOX", 1, "t2"), ("\\Seen", "\\Answered"))]
    assert ledger.updated == [
        (("INBOX", UV, "2"), _entry("2", ("\\Seen", "\\Answered"))),
        (("INBOX", UV, "3"), _entry("3", ("\\Seen",), gone=True)),
    ]


def test_propagating_deletes_removes_our_copies_of_every_message_gone() -> None:
    ledger, target = _ledger(), FlagTarget()
    request = PassRequest(propagate_deletes=True)
    moved = apply_changes(target, ledger, _whole_listing(), request)  # type: ignore[arg-type]
    assert moved.deleted == 2
    assert target.removed == [Placement("INBOX", 1, "t3"), Placement("INBOX", 1, "t4")]
    assert ledger.forgotten == [("INBOX", UV, "3"), ("INBOX", UV, "4")]


def test_qresync_changes_read_only_the_entries_they_name() -> None:
    ledger, target = _ledger(), FlagTarget()
    changes = {
        "INBOX": FolderChanges(
            FolderState(UV, 10, 99), flags={"2": ("\\Flagged",)}, vanished=frozenset({"3"})
        )
    }
    moved = apply_changes(target, ledger, changes, PassRequest())  # type: ignore[arg-type]
    assert ledger.scans == 0
    assert (moved.flags, moved.vanished) == (1, 1)
    assert target.flagged == [(Placement("INBOX", 1, "t2"), ("\\Flagged",))]


def test_many_folders_changes_read_their_entries_together_a_bounded_number_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A round trip for many folders' few changes, not one a folder; and never more than
    ENTRIES_READ entries asked for at once (a million changed flags stay bounded)."""
    monkeypatch.setattr(ledgerchanges, "ENTRIES_READ", 3)
    names = ("INBOX", "Sent", "Archive/2024")
    held = {(n, UV, str(uid)): _entry(str(uid), ()) for n in names for uid in range(1, 4)}
    ledger, target = CountingLedger(held), FlagTarget()
    changes = {
        n: FolderChanges(FolderState(UV, 10, 99), flags={"1": ("\\Seen",), "3": ("\\Seen",)})
        for n in names
    }
    moved = apply_changes(target, ledger, changes, PassRequest())  # type: ignore[arg-type]
    assert moved.flags == 6
    assert [len(asked) for asked in ledger.asked] == [3, 3]  # six members, three at a time

"""A pass's source changes onto the copies the ledger knows: the flags changed at the source
given to the copies, the messages gone at the source marked so, and with --propagate-deletes
the copies we put there of every message gone removed.

Where a folder's changes are a whole listing (no QRESYNC: every UID still there, every
flag), the whole ledger is read once for all such folders, one entry at a time, and only
the entries that change are kept: after a first pass of a million messages, the ledger
holds a million entries, and nearly none of them changes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from migrator.syncstate import FolderChanges, Ledger, LedgerEntry, Member, PassRequest
from migrator.targets.base import MailboxTarget, SyncTarget

log = logging.getLogger(__name__)

Change = tuple[Member, LedgerEntry]

# Ledger entries read in one command, at most.
ENTRIES_READ = 10_000


@dataclass
class Moved:
    flags: int = 0
    deleted: int = 0
    vanished: int = 0
    note: str | None = None


@dataclass
class _Folder:
    """What the ledger entries of one source folder's changes call for."""

    change: FolderChanges
    new: frozenset[str]  # UIDs above the old UIDNEXT, listed as new
    flagged: list[Change] = field(default_factory=list)
    gone: list[Change] = field(default_factory=list)
    removals: list[Change] = field(default_factory=list)

    def weigh(self, member: Member, entry: LedgerEntry, propagate_deletes: bool) -> None:
        """One ledger entry of this folder (any UIDVALIDITY it had)."""
        change = self.change
        if member[1] != change.state.uidvalidity:
            return
        uid = member[2]
        flags = change.flags.get(uid)
        if flags is not None and not entry.gone and set(flags) != set(entry.flags):
            self.flagged.append((member, replace(entry, flags=flags)))
        went = not entry.gone and (
            uid in change.vanished
            or (change.present is not None and uid not in change.present and uid not in self.new)
        )
        if went:
            self.gone.append((member, replace(entry, gone=True)))
        if propagate_deletes and entry.ours and (entry.gone or went):
            self.removals.append((member, entry))


def apply_changes(
    target: MailboxTarget,
    ledger: Ledger,
    changes: Mapping[str, FolderChanges],
    request: PassRequest,
) -> Moved:
    """Flags changed at the source onto the copies the ledger knows; messages gone at the
    source marked so in the ledger, and with `propagate_deletes` the copies we put there
    of every message gone (in this pass or an earlier one) removed."""
    moved = Moved()
    folders = {
        name: _Folder(change, frozenset(r.uid for r in change.new))
        for name, change in changes.items()
    }
    propagate = request.propagate_deletes
    for member, entry in _touched(ledger, folders, propagate):
        folders[member[0]].weigh(member, entry, propagate)
    updates: list[Change] = []
    removals: list[Change] = []
    flagged = 0
    for folder in folders.values():
        flagged += len(folder.flagged)
        moved.vanished += len(folder.gone)
        updates += folder.flagged + sorted(folder.gone, key=_uid)
        removals += sorted(folder.removals, key=_uid)
    if not (flagged or removals):
        ledger.update(updates)
        return moved
    if not isinstance(target, SyncTarget):
        moved.note = "the target cannot change flags or remove copies: source changes not applied"
        log.warning("%s (%d flag changes)", moved.note, flagged)
        return moved
    ledger.fence()
    changed = [(e.placement, e.flags) for _, e in updates if not e.gone]
    moved.flags = target.set_flags(changed) if changed else 0
    ledger.update(updates)
    if removals:
        ledger.fence()
        moved.deleted = target.remove([e.placement for _, e in removals])
        ledger.forget([m for m, _ in removals])
    return moved


def _touched(
    ledger: Ledger, folders: Mapping[str, _Folder], propagate_deletes: bool
) -> Iterable[Change]:
    """The ledger entries the folders' changes touch: with QRESYNC, those of the messages
    changed or gone only; for a UID diff, or to find the copies of messages that went
    earlier (--propagate-deletes), all of the folder's, from one reading of the whole
    ledger for all such folders."""
    whole = {
        name for name, f in folders.items() if f.change.present is not None or propagate_deletes
    }
    # The folders' entries read together, ENTRIES_READ at a time: a round trip for many
    # folders' few changes, not one a folder, and memory bounded for a million.
    members: list[Member] = []
    for name, folder in folders.items():
        if name in whole:
            continue
        change = folder.change
        for uid in sorted(set(change.flags) | change.vanished):
            members.append((name, change.state.uidvalidity, uid))
            if len(members) == ENTRIES_READ:
                yield from ledger.entries_of(members).items()
                members = []
    yield from ledger.entries_of(members).items()
    if whole:
        yield from ((m, e) for m, e in ledger.each_entry() if m[0] in whole)


def _uid(change: Change) -> str:
    return change[0][2]

"""An incremental pass (`migrator sync`, `migrator complete`): only what changed at the
source since the last pass reaches the target.

Each folder the last pass read is asked for its changes (sources.base.IncrementalSource:
the messages above its old UIDNEXT, the flags changed since its HIGHESTMODSEQ, the UIDs
gone); a folder the source did not have then is listed whole, and so is one whose
UIDVALIDITY changed, recognised at the target by content like any first pass, so nothing
is copied twice.  A folder renamed at the source keeps its UIDVALIDITY and messages under
a new name: it is recognised as the missing folder by UIDVALIDITY and by the content keys
of its checkpointed messages, its checkpoints and ledger move to the new name, and the
target folder is renamed with it where the target can (else the copies stay where they
are and new mail goes to the new name).  Then the flags changed at the source reach the
copies the ledger knows (targets.base.SyncTarget), and with `propagate_deletes` the
copies of messages gone at the source are removed, where the ledger says we put them.

Folder states are saved only when the pass ends done: a pass cut short starts the next
one from the same states, and the checkpoints keep every message single.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from migrator.foldermap import FolderMap
from migrator.ledgerchanges import Moved, apply_changes
from migrator.listing import Listing, add_folder, list_mailbox
from migrator.passcopy import CopyOptions, copy_listed
from migrator.plan import MessageRef
from migrator.recognition import TargetCopy, content_key
from migrator.report import MailboxResult, MailboxState
from migrator.rewrite import RewriteMaps, rewrite_message
from migrator.sending import ConnectionSlots, InFlight, Progress
from migrator.sources.base import (
    ChangesTogether,
    IncrementalSource,
    MailboxSource,
    SourceFolder,
    StatesWithFolders,
)
from migrator.syncstate import FolderChanges, FolderState, Ledger, Member, PassRequest
from migrator.targets.base import IndexesTogether, MailboxTarget, SyncTarget

log = logging.getLogger(__name__)

# Checkpointed messages whose content keys confirm a renamed folder, at most.
RENAME_EVIDENCE = 3


def remember_folders(
    source: MailboxSource,
    target: MailboxTarget,
    listing: Listing,
    progress: Progress,
    request: PassRequest | None = None,
    *,
    first: bool = False,
) -> MailboxResult | None:
    """After a whole pass that ended done: the copies the ledger knows given the flags the
    listing shows, their messages no longer listed marked gone (and removed where
    `request` says so), as an incremental pass does; then each source folder's state as
    it was listed, and each target folder's mark, for the next incremental pass.  What
    it moved, as a result holding only those counts (None where nothing is kept).

    `first`: the pass began with nothing checkpointed, so every ledger entry is of this
    pass, written with the flags of this listing, and no listed message is gone: nothing
    to carry, and the whole ledger (a tenth of a loopback copy's time) is not read."""
    if not isinstance(progress, Ledger) or not isinstance(source, IncrementalSource):
        return None
    states = {
        n: s
        for n in listing.target_of
        if n not in listing.views and (s := source.listed_state(n)) is not None
    }
    moved = Moved()
    if not first:  # (a million messages' flags by UID: not built for nothing)
        listed: dict[str, dict[str, tuple[str, ...]]] = {n: {} for n in states}
        for ref in listing.refs:
            if ref.folder in listed and ref.uidvalidity == states[ref.folder].uidvalidity:
                listed[ref.folder][ref.uid] = ref.flags
        # `present`: the UIDs' dict's own keys, rather than a second set of them all.
        changes = {
            n: FolderChanges(states[n], flags=f, all_flags=True, present=f.keys())
            for n, f in listed.items()
        }
        moved = apply_changes(target, progress, changes, request or PassRequest())
    progress.save_folder_states(states)
    _save_marks(target, set(listing.target_of.values()), progress)
    return MailboxResult(
        state=MailboxState.DONE,
        flag_changes=moved.flags,
        deleted_messages=moved.deleted,
        vanished_messages=moved.vanished,
        error=moved.note,
    )


def sync_pass(
    source: MailboxSource,
    target: MailboxTarget,
    folder_map: FolderMap,
    progress: Progress,
    options: CopyOptions,
    request: PassRequest,
    *,
    now: datetime | None = None,
    in_flight: InFlight | None = None,
    slots: ConnectionSlots | None = None,
    stop: threading.Event | None = None,
) -> MailboxResult:
    """One incremental pass; raises TransientError for the caller to retry.  A source
    that cannot say what changed, or one with an RFC 6154 \\All view (whose archived
    mail is found only against every other folder), is listed whole."""
    now = now or datetime.now(UTC)
    folders = (
        source.list_folders_with_states()
        if isinstance(source, StatesWithFolders)
        else source.list_folders()
    )
    if (
        not isinstance(progress, Ledger)
        or not isinstance(source, IncrementalSource)
        or any(f.is_all_mail for f in folders)
    ):
        listing = list_mailbox(source, target, folder_map, now)
        return _whole(
            source, target, listing, progress, options, request, now, in_flight, slots, stop
        )
    read = _read_changes(source, source, target, folder_map, progress, folders, options.rewrite)
    marks = progress.target_marks()
    if in_flight is not None:
        in_flight.settle(options.late_commit_grace)  # before the checkpoints are read
    checkpoints = progress.checkpoints_of([r.ident for r in read.listing.refs])
    index = _index_of(target, read, marks, checkpoints)
    result = copy_listed(
        source,
        target,
        read.listing,
        progress,
        options,
        now,
        in_flight=in_flight,
        slots=slots,
        stop=stop,
        index=index,
        checkpoints=checkpoints,
    )
    if result.state is not MailboxState.DONE:
        return result
    moved = apply_changes(target, progress, read.changes, request)
    progress.save_folder_states(read.states)
    _save_marks(target, set(read.listing.target_of.values()), progress)
    return replace(
        result,
        flag_changes=moved.flags,
        deleted_messages=moved.deleted,
        vanished_messages=moved.vanished,
        new_folders=read.new_folders,
        renamed_folders=len(read.renamed),
        error=result.error or moved.note,
    )


def _whole(
    source: MailboxSource,
    target: MailboxTarget,
    listing: Listing,
    progress: Progress,
    options: CopyOptions,
    request: PassRequest,
    now: datetime,
    in_flight: InFlight | None,
    slots: ConnectionSlots | None,
    stop: threading.Event | None,
) -> MailboxResult:
    """A pass over the whole listing, as the first one (recognition keeps it single)."""
    result = copy_listed(
        source, target, listing, progress, options, now, in_flight=in_flight, slots=slots, stop=stop
    )
    if result.state is not MailboxState.DONE:
        return result
    moved = remember_folders(source, target, listing, progress, request)
    return with_moves(result, moved)


def with_moves(result: MailboxResult, moved: MailboxResult | None) -> MailboxResult:
    """`result` with what remember_folders moved beside its new mail."""
    if moved is None:
        return result
    return replace(
        result,
        flag_changes=moved.flag_changes,
        deleted_messages=moved.deleted_messages,
        vanished_messages=moved.vanished_messages,
        error=result.error or moved.error,
    )


@dataclass
class _Read:
    listing: Listing = field(default_factory=Listing)
    changes: dict[str, FolderChanges] = field(default_factory=dict)  # read incrementally
    states: dict[str, FolderState] = field(default_factory=dict)  # for the next pass
    whole: set[str] = field(default_factory=set)  # source folders listed whole
    renamed: dict[str, str] = field(default_factory=dict)  # new name -> old name
    new_folders: int = 0


def _read_changes(
    source: MailboxSource,
    inc: IncrementalSource,
    target: MailboxTarget,
    folder_map: FolderMap,
    progress: Ledger,
    folders: list[SourceFolder],
    rewrite: RewriteMaps | None,
) -> _Read:
    read = _Read()
    known = progress.folder_states()
    read.renamed = _renames(source, inc, target, folder_map, progress, folders, known, rewrite)
    for new, old in read.renamed.items():
        # A rename may start the folder's mod-sequences afresh (Dovecot's does): its flags
        # are compared whole with the ledger this once.
        known[new] = replace(known.pop(old), modseq=None)
    asked = [(folder, known[folder.name]) for folder in folders if folder.name in known]
    together = (
        dict(zip((f.name for f, _ in asked), inc.changes_of(asked), strict=True))
        if isinstance(inc, ChangesTogether)
        else {f.name: inc.changes(f, since) for f, since in asked}
    )
    for folder in folders:
        mapped = folder_map.map(folder.path, folder.special_use)
        since = known.get(folder.name)
        changes = together.get(folder.name)
        if changes is None:
            read.new_folders += since is None
            listed = source.list_messages(folder)
            state = inc.listed_state(folder.name)
            if state is not None:
                read.states[folder.name] = state
            read.whole.add(folder.name)
            add_folder(read.listing, target, folder, listed, mapped)
        else:
            read.changes[folder.name] = changes
            read.states[folder.name] = changes.state
            add_folder(read.listing, target, folder, changes.new, mapped)
    return read


def _index_of(
    target: MailboxTarget,
    read: _Read,
    marks: Mapping[str, str],
    checkpoints: Mapping[Member, str | None],
) -> Callable[[str], list[TargetCopy]]:
    """How this pass reads a target folder's index: where every source folder bound for
    it was read incrementally and the target kept a mark, only what came after the mark
    (the copies before it were all indexed, or recorded, by an earlier pass).  A target
    that reads many at once (IndexesTogether) reads those of every folder a message
    without a checkpoint is bound for (as recognition will ask) together, now."""
    target_of = read.listing.target_of
    whole = {target_of[n] for n in read.whole if n in target_of}
    since = {
        name: mark
        for ref in read.listing.refs
        if ref.ident not in checkpoints and ref.placed in target_of
        if (name := target_of[ref.placed]) not in whole and (mark := marks.get(name)) is not None
    }
    early = target.indexes_since(since) if since and isinstance(target, IndexesTogether) else {}

    def index(name: str) -> list[TargetCopy]:
        mark = marks.get(name)
        if mark is not None and name not in whole and isinstance(target, SyncTarget):
            copies = early.pop(name) if name in early else target.index_since(name, mark)
            if copies is not None:
                return copies
        return target.index(name)

    return index


def _renames(
    source: MailboxSource,
    inc: IncrementalSource,
    target: MailboxTarget,
    folder_map: FolderMap,
    progress: Ledger,
    folders: list[SourceFolder],
    known: dict[str, FolderState],
    rewrite: RewriteMaps | None,
) -> dict[str, str]:
    """Source folders that are a known folder renamed: new name -> old name, with the
    checkpoints and ledger moved (and the target folder renamed, where it can be)."""
    names = {f.name for f in folders}
    missing = {n: s for n, s in known.items() if n not in names}
    renamed: dict[str, str] = {}
    for folder in folders:
        if not missing or folder.name in known or folder.is_all_mail:
            continue
        state = inc.folder_state(folder)
        for old, old_state in list(missing.items()):
            if old_state.uidvalidity != state.uidvalidity:
                continue
            if not _same_messages(source, progress, old, folder, old_state, rewrite):
                continue
            entries = progress.entries(old)
            at = {e.placement.folder for e in entries.values()}
            moved_to: str | None = None
            # The target folder follows only where it holds this folder's copies alone
            # (two source folders merged into one keep it as it is).
            if len(at) == 1 and isinstance(target, SyncTarget):
                only = at.pop()
                if progress.sources_of(only) <= {old}:
                    mapped = folder_map.map(folder.path, folder.special_use)
                    moved_to = target.rename_folder(only, mapped)
            progress.rename_folder(old, folder.name, moved_to)
            log.warning(
                "source folder %r is %r renamed: its copies are kept%s",
                folder.name,
                old,
                f" (target folder now {moved_to!r})" if moved_to else "",
            )
            renamed[folder.name] = old
            del missing[old]
            break
    return renamed


def _same_messages(
    source: MailboxSource,
    progress: Ledger,
    old: str,
    folder: SourceFolder,
    old_state: FolderState,
    rewrite: RewriteMaps | None,
) -> bool:
    """Do checkpointed messages of `old` sit under the same UIDs in `folder`, by their
    content keys?  (Some servers give every folder one UIDVALIDITY.)"""
    keys = {
        ident: key
        for ident, key in progress.checkpoints().items()
        if ident[0] == old and ident[1] == old_state.uidvalidity and key
    }
    if not keys:
        return False
    sample = sorted(keys, key=lambda i: i[2])[:RENAME_EVIDENCE]
    refs = [_ref(folder, ident) for ident in sample]
    seen = 0
    for ref, head in source.heads(refs):
        data = rewrite_message(head, rewrite).message if rewrite is not None else head
        if content_key(data, complete=True) != keys[(old, ref.uidvalidity, ref.uid)]:
            return False
        seen += 1
    return seen > 0


def _ref(folder: SourceFolder, ident: Member) -> MessageRef:
    return MessageRef(
        folder=folder.name, uidvalidity=ident[1], uid=ident[2], size=0, internaldate=None
    )


def _save_marks(target: MailboxTarget, names: set[str], ledger: Ledger) -> None:
    if isinstance(target, SyncTarget):
        marks = {n: m for n in sorted(names) if (m := target.mark(n)) is not None}
        ledger.save_target_marks(marks)

"""What a pass over a mailbox starts from: the source listed folder by folder, each folder
opened at the target through the folder map, and the messages the target already holds
recognised by content (migrator.recognition) rather than sent again."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from migrator.errors import (
    FolderRefused,
)
from migrator.foldermap import FolderMap, TargetFolder
from migrator.plan import (
    MessageRef,
    newest_first,
)
from migrator.recognition import (
    Candidate,
    TargetCopy,
    content_key,
    epoch_seconds,
    match,
    message_digest,
    needs_digests,
    only_in_all_mail,
    system_flags,
)
from migrator.report import SkippedMessage
from migrator.rewrite import RewriteMaps, rewrite_message
from migrator.sending import (
    Checkpoint,
)
from migrator.sources.base import ListingManySource, MailboxSource, SourceFolder
from migrator.syncstate import LedgerEntry, Placement
from migrator.targets.base import MailboxTarget

log = logging.getLogger(__name__)

# Where the mail only an RFC 6154 \All view holds (Gmail's archived mail) goes, as a
# source path for the folder map.
ARCHIVE_PATH = ("Archive",)


@dataclass
class Listing:
    """The source mailbox as listed, with each folder's folder at the target."""

    refs: list[MessageRef] = field(default_factory=list)
    target_of: dict[str, str] = field(default_factory=dict)  # source folder -> target name
    refused: dict[str, str] = field(default_factory=dict)  # source folder -> why not
    skipped: list[SkippedMessage] = field(default_factory=list)  # their messages
    views: set[str] = field(default_factory=set)  # RFC 6154 \All views: a part listed only


def list_mailbox(
    source: MailboxSource,
    target: MailboxTarget,
    folder_map: FolderMap,
    now: datetime,
) -> Listing:
    """Every folder and message of the source, each folder opened at the target.  An
    RFC 6154 \\All view (Gmail's All Mail) is read last: of its mail, what no other
    folder holds (Gmail's archived mail) goes to the Archive folder.  The target's folders
    are opened in a thread while the source is listed (each end its own connection, and
    at a distance each a round trip or two per folder)."""
    listing = Listing()
    folders = source.list_folders()
    real = [f for f in folders if not f.is_all_mail]
    views = [f for f in folders if f.is_all_mail]
    mapped = [folder_map.map(f.path, f.special_use) for f in real]
    mapped += [folder_map.map(ARCHIVE_PATH) for _ in views]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-folders") as pool:
        opening = pool.submit(_open_folders, target, mapped)
        try:
            lists = list_each(source, real)
            listed_real = [listed for _, listed in lists]
            opened = opening.result()
        finally:
            opening.cancel()  # the pool's exit waits for a thread already running
    held: list[MessageRef] = []  # every message of the real folders, refused ones too
    for folder, listed, place in zip(real, listed_real, opened[: len(real)], strict=True):
        if views:  # only an \\All view's mail is told apart from them
            held += listed
        add_opened(listing, folder, listed, place)
    for view, place in zip(views, opened[len(real) :], strict=True):
        listing.views.add(view.name)
        listed = source.list_messages(view)
        no_id = [r for r in listed + held if not r.message_id]
        keys = {r.ident: content_key(d, complete=True) for r, d in source.heads(no_id)}
        only = only_in_all_mail(listed, held, keys)
        if only:
            log.warning(
                "%d messages of %r are in no other folder: copied to %s",
                len(only),
                view.name,
                "/".join(ARCHIVE_PATH),
            )
        add_opened(listing, view, only, place)
    return listing


def list_each(
    source: MailboxSource, folders: Sequence[SourceFolder]
) -> list[tuple[SourceFolder, list[MessageRef]]]:
    """Each folder's messages, in fewer round trips where the source can (ListingManySource)."""
    if isinstance(source, ListingManySource):
        return list(source.list_many(folders))
    return [(folder, source.list_messages(folder)) for folder in folders]


def _open_folders(
    target: MailboxTarget, mapped: Sequence[TargetFolder]
) -> list[str | FolderRefused]:
    """Each mapped folder opened at the target, in order: its name there, or the refusal."""
    opened: list[str | FolderRefused] = []
    for folder in mapped:
        try:
            opened.append(target.open_folder(folder))
        except FolderRefused as exc:
            opened.append(exc)
    return opened


def add_folder(
    listing: Listing,
    target: MailboxTarget,
    folder: SourceFolder,
    listed: list[MessageRef],
    mapped: TargetFolder,
) -> None:
    """Open `folder`'s place at the target and add its messages (add_opened)."""
    try:
        place: str | FolderRefused = target.open_folder(mapped)
    except FolderRefused as exc:
        place = exc
    add_opened(listing, folder, listed, place)


def add_opened(
    listing: Listing,
    folder: SourceFolder,
    listed: list[MessageRef],
    place: str | FolderRefused,
) -> None:
    """Add `folder`'s messages, at `place` (its name at the target, opened there); a
    folder the target refused fails alone: its messages are named as skipped, the other
    folders go on."""
    if isinstance(place, FolderRefused):
        log.warning("skipped folder %r: %s", folder.name, place)
        listing.refused[folder.name] = str(place)
        listing.skipped += [SkippedMessage(r.folder, r.uid, r.size, str(place)) for r in listed]
    else:
        listing.target_of[folder.name] = place
        listing.refs.extend(listed)


def refused_note(refused: dict[str, str], messages: int) -> str | None:
    """One line for the status table: the folders the target refused, and why."""
    if not refused:
        return None
    first = next(iter(refused.values()))
    return f"{messages} messages skipped in {len(refused)} refused folder(s); {first}"


def recognise(
    source: MailboxSource,
    target: MailboxTarget,
    refs: Sequence[MessageRef],
    target_of: dict[str, str],
    checkpoints: dict[Checkpoint, str | None],
    rewrite: RewriteMaps | None,
    now: datetime,
    *,
    index: Callable[[str], list[TargetCopy]] | None = None,
) -> list[tuple[MessageRef, str | None, str]]:
    """The messages of `refs` without a checkpoint that are at the target already, with
    their content keys and their ledger entries (syncstate.LedgerEntry: found, not
    ours).  Only target folders where such a message is bound are indexed (by `index`,
    target.index unless told), and only their messages without a known key are read
    (header blocks; the whole message only where a key is shared, see
    migrator.recognition)."""
    read_index = index or target.index
    bound: dict[str, list[MessageRef]] = {}
    for ref in refs:
        bound.setdefault(target_of[ref.placed], []).append(ref)
    found: list[tuple[MessageRef, str | None, str]] = []
    for name, members in sorted(bound.items()):
        if all(ref.ident in checkpoints for ref in members):
            continue  # nothing to decide here
        copies = read_index(name)
        if not copies:
            continue
        keys: dict[Checkpoint, str | None] = {
            ident: key for ident, key in checkpoints.items() if key is not None
        }
        unknown = [ref for ref in members if keys.get(ref.ident) is None]
        for ref, data in source.heads(unknown):
            keys[ref.ident] = content_key(_rewritten(data, rewrite), complete=True)
        candidates = [
            Candidate(
                ref,
                keys.get(ref.ident),
                ref.ident in checkpoints,
                system_flags(ref.flags),
                epoch_seconds(ref.append_date(now)),
            )
            for ref in newest_first(members, now)
        ]
        ask_source, ask_target = needs_digests(candidates, copies)
        source_digests = {
            ref.ident: message_digest(_rewritten(body, rewrite))
            for ref, body in (source.fetch([c.ref for c in ask_source]) if ask_source else ())
        }
        target_digests = target.digests(name, ask_target) if ask_target else {}
        matched = match(candidates, copies, source_digests, target_digests)
        found += [
            (c.ref, c.key, _found_at(name, matched[c.ident], c.ref))
            for c in candidates
            if not c.checkpointed and c.ident in matched
        ]
    return found


def _found_at(name: str, copy: TargetCopy, ref: MessageRef) -> str:
    """The ledger entry of a copy found at the target (not ours to remove)."""
    return LedgerEntry(Placement(name, 0, copy.id), ref.flags, ours=False).to_text()


def _rewritten(data: bytes, rewrite: RewriteMaps | None) -> bytes:
    """What the target holds of a message that starts with `data` (its header block at
    least): rewriting touches nothing past the header block."""
    return rewrite_message(data, rewrite).message if rewrite is not None else data

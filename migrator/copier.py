"""Drives one mailbox: source -> plan -> target, with checkpoints and progress.

One pass: list every source folder and message (the \\All view last, for the mail no
other folder holds), map folders, recognise what the target already holds by content
(migrator.recognition), plan newest first within the date range and the quota budget,
then send in that order (migrator.sending), checkpointing each batch as it lands.  A
transient failure ends the pass; `migrate_mailbox` reconnects and runs another pass,
which starts from the checkpoints and recognises again what is at the target, so
nothing is copied twice and nothing is skipped.  When the failure left appends in
flight, the next pass first gives the target a grace period to commit them late.  A
message the source lists but never sends is named, and the mailbox never ends `done`
with it missing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from migrator.errors import (
    FolderRefused,
    LockLost,
    MailboxNotReady,
    PermanentError,
    TransientError,
)
from migrator.foldermap import FolderMap, TargetFolder
from migrator.plan import (
    MessageRef,
    make_plan,
    newest_first,
    quota_budget,
    reorderable_bytes,
    send_order,
    take_within_budget,
    within_range,
)
from migrator.recognition import (
    Candidate,
    content_key,
    epoch_seconds,
    match,
    message_digest,
    needs_digests,
    only_in_all_mail,
    system_flags,
)
from migrator.report import MailboxResult, MailboxState, SkippedMessage
from migrator.rewrite import RewriteMaps, rewrite_message
from migrator.secrets import exception_text
from migrator.sending import (
    BATCH_BYTES,
    GROUPING_WINDOW,
    PREFETCH_BYTES,
    Checkpoint,
    ConnectionSlots,
    InFlight,
    Progress,
    Sending,
    Sent,
    send,
)
from migrator.sources.base import MailboxSource, SourceFolder
from migrator.targets.base import MailboxTarget

log = logging.getLogger(__name__)

__all__ = ["Checkpoint", "ConnectionSlots", "CopyOptions", "InFlight", "Progress"]

# Seconds: a held segment or a slow commit lands within this once the path recovers; the
# wait is paid only after a pass that broke with appends in flight.
LATE_COMMIT_GRACE = 30.0
# Connections to each side one mailbox uses at most, by default (`migrator run`); the
# copier itself uses one unless told otherwise.
CONNECTIONS_PER_MAILBOX = 4
# Where the mail only an RFC 6154 \All view holds (Gmail's archived mail) goes, as a
# source path for the folder map.
ARCHIVE_PATH = ("Archive",)
UNDELIVERED = "listed by the source, but the source never sent it"


@dataclass(frozen=True)
class CopyOptions:
    since: datetime | None = None
    until: datetime | None = None
    activation_quota: int | None = None  # bytes, from the activation CSV
    max_passes: int = 5  # passes after transient errors, each resuming the last
    max_wait: float = 60.0  # seconds between passes, at most
    rewrite: RewriteMaps | None = None  # address headers rewritten on the way; None: bytes as is
    # After a pass gave up on appends in flight, seconds (from giving up) before the next
    # pass indexes the target: a server may commit them late (a middlebox held the bytes,
    # or it answered after our timeout), and the index must see them or they go twice.
    late_commit_grace: float = LATE_COMMIT_GRACE
    # Connections (source and target, in pairs) one mailbox may use at once, where both
    # adapters allow a second session and the servers' connection caps have room.
    connections: int = 1
    # The send loop's bounds (see migrator.sending): bytes of one batch of appends, bytes
    # the reader runs ahead, and the window (in messages) the send order groups folders in.
    batch_bytes: int = BATCH_BYTES
    prefetch_bytes: int = PREFETCH_BYTES
    grouping_window: int = GROUPING_WINDOW


class SourceIncomplete(TransientError):
    """The source listed messages it then did not send: another pass asks again (one that
    was expunged meanwhile is no longer listed); after the last, `result` is the outcome."""

    def __init__(self, message: str, result: MailboxResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass
class _Listing:
    """The source mailbox as listed, with each folder's folder at the target."""

    refs: list[MessageRef] = field(default_factory=list)
    target_of: dict[str, str] = field(default_factory=dict)  # source folder -> target name
    refused: dict[str, str] = field(default_factory=dict)  # source folder -> why not
    skipped: list[SkippedMessage] = field(default_factory=list)  # their messages


def copy_pass(
    source: MailboxSource,
    target: MailboxTarget,
    folder_map: FolderMap,
    progress: Progress,
    options: CopyOptions,
    *,
    now: datetime | None = None,
    in_flight: InFlight | None = None,
    slots: ConnectionSlots | None = None,
    stop: threading.Event | None = None,
) -> MailboxResult:
    """One pass over the mailbox; raises TransientError for the caller to retry.

    `in_flight` carries appends a failed earlier pass may have left uncommitted; this
    pass waits out their grace before indexing, and records its own if it fails.
    `slots` bounds the extra connections of a copy over several (unbounded: None).
    Once `stop` is set (the operator pressed Ctrl-C), no further batch is sent: the
    batches in flight finish and are checkpointed, and the result is `interrupted`."""
    now = now or datetime.now(UTC)
    rewrite = options.rewrite if options.rewrite and not options.rewrite.is_empty() else None
    listing = _list_mailbox(source, target, folder_map, options, now)
    if in_flight is not None:
        in_flight.settle(options.late_commit_grace)
    checkpoints = progress.checkpoints()
    in_range = [r for r in listing.refs if within_range(r, now, options.since, options.until)]
    recognised = _recognise(source, target, in_range, listing.target_of, checkpoints, rewrite, now)
    if recognised:
        progress.recognised(recognised)
    plan = make_plan(
        listing.refs,
        now=now,
        since=options.since,
        until=options.until,
        done=set(checkpoints) | {ref.ident for ref, _ in recognised},
    )
    quota = target.quota()
    already_bytes = sum(r.size for r in plan.already_done)
    usage = quota.usage if quota.usage is not None else already_bytes
    budget = quota_budget(
        server_limit=quota.limit, server_usage=usage, activation_limit=options.activation_quota
    )
    split = take_within_budget(plan.to_copy, budget)
    progress.planned(
        total_messages=plan.total_messages,
        total_bytes=plan.total_bytes,
        done_messages=len(plan.already_done),
        done_bytes=already_bytes,
    )
    room = reorderable_bytes(
        budget=budget, server_limit=quota.limit, server_unlimited=quota.unlimited
    )
    order = send_order(split.fits, room, options.grouping_window, options.batch_bytes)
    sending = Sending(
        listing.target_of,
        progress,
        now,
        rewrite,
        in_flight,
        stop,
        batch_bytes=options.batch_bytes,
        prefetch_bytes=options.prefetch_bytes,
        grouping_window=options.grouping_window,
    )
    sent, unsent = send(source, target, order, room, options.connections, slots, sending)
    left = tuple(unsent) + split.left
    if stop is not None and stop.is_set() and unsent:
        state = MailboxState.INTERRUPTED
    else:
        state = MailboxState.QUOTA_STOPPED if left else MailboxState.DONE
    result = MailboxResult(
        state=state,
        total_messages=plan.total_messages + len(listing.skipped),
        total_bytes=plan.total_bytes + sum(s.size for s in listing.skipped),
        copied_messages=sent.messages,
        copied_bytes=sent.bytes,
        already_messages=len(plan.already_done),
        already_bytes=already_bytes,
        left_messages=len(left),
        left_bytes=sum(r.size for r in left),
        skipped=tuple(listing.skipped + sent.skipped),
        error=_refused_note(listing.refused, len(listing.skipped)),
        rewritten_messages=sent.rewritten_messages,
        rewritten_addresses=sent.rewritten_addresses,
        unparsable_headers=sent.unparsable_headers,
        source_seconds=sent.source_seconds,
        target_seconds=sent.target_seconds,
        throttle_seconds=target.throttled_seconds,
    )
    if sent.undelivered:
        raise _incomplete(result, sent)
    return result


def _incomplete(result: MailboxResult, sent: Sent) -> SourceIncomplete:
    """The pass's outcome when the source did not send messages it listed: `failed`, each
    of them named among the skipped, so it never ends `done` with them missing."""
    missing = [SkippedMessage(r.folder, r.uid, r.size, UNDELIVERED) for r in sent.undelivered]
    named = ", ".join(f"uid {r.uid} in {r.folder!r}" for r in sent.undelivered[:5])
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    message = f"{len(missing)} messages {UNDELIVERED}: {named}{more}"
    log.warning("%s", message)
    failed = replace(
        result,
        state=MailboxState.FAILED,
        skipped=result.skipped + tuple(missing),
        error=message,
    )
    return SourceIncomplete(message, failed)


def _list_mailbox(
    source: MailboxSource,
    target: MailboxTarget,
    folder_map: FolderMap,
    options: CopyOptions,
    now: datetime,
) -> _Listing:
    """Every folder and message of the source, each folder opened at the target.  An
    RFC 6154 \\All view (Gmail's All Mail) is read last: of its mail, what no other
    folder holds (Gmail's archived mail) goes to the Archive folder."""
    listing = _Listing()
    folders = source.list_folders()
    held: list[MessageRef] = []  # every message of the real folders, refused ones too
    for folder in folders:
        if not folder.is_all_mail:
            listed = source.list_messages(folder)
            held += listed
            _open(listing, target, folder, listed, folder_map.map(folder.path, folder.special_use))
    for view in (f for f in folders if f.is_all_mail):
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
        _open(listing, target, view, only, folder_map.map(ARCHIVE_PATH))
    return listing


def _open(
    listing: _Listing,
    target: MailboxTarget,
    folder: SourceFolder,
    listed: list[MessageRef],
    mapped: TargetFolder,
) -> None:
    """Open `folder`'s place at the target and add its messages; a folder the target
    refuses fails alone: its messages are named as skipped, the other folders go on."""
    try:
        listing.target_of[folder.name] = target.open_folder(mapped)
    except FolderRefused as exc:
        log.warning("skipped folder %r: %s", folder.name, exc)
        listing.refused[folder.name] = str(exc)
        listing.skipped += [SkippedMessage(r.folder, r.uid, r.size, str(exc)) for r in listed]
    else:
        listing.refs.extend(listed)


def _refused_note(refused: dict[str, str], messages: int) -> str | None:
    """One line for the status table: the folders the target refused, and why."""
    if not refused:
        return None
    first = next(iter(refused.values()))
    return f"{messages} messages skipped in {len(refused)} refused folder(s); {first}"


def _recognise(
    source: MailboxSource,
    target: MailboxTarget,
    refs: Sequence[MessageRef],
    target_of: dict[str, str],
    checkpoints: dict[Checkpoint, str | None],
    rewrite: RewriteMaps | None,
    now: datetime,
) -> list[tuple[MessageRef, str | None]]:
    """The messages of `refs` without a checkpoint that are at the target already, with
    their content keys.  Only target folders where such a message is bound are indexed,
    and only their messages without a known key are read (header blocks; the whole
    message only where a key is shared, see migrator.recognition)."""
    bound: dict[str, list[MessageRef]] = {}
    for ref in refs:
        bound.setdefault(target_of[ref.folder], []).append(ref)
    found: list[tuple[MessageRef, str | None]] = []
    for name, members in sorted(bound.items()):
        if all(ref.ident in checkpoints for ref in members):
            continue  # nothing to decide here
        copies = target.index(name)
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
        found += [(c.ref, c.key) for c in candidates if not c.checkpointed and c.ident in matched]
    return found


def _rewritten(data: bytes, rewrite: RewriteMaps | None) -> bytes:
    """What the target holds of a message that starts with `data` (its header block at
    least): rewriting touches nothing past the header block."""
    return rewrite_message(data, rewrite).message if rewrite is not None else data


def migrate_mailbox(
    open_source: Callable[[], MailboxSource],
    open_target: Callable[[], MailboxTarget],
    folder_map: FolderMap,
    progress: Progress,
    options: CopyOptions,
    slots: ConnectionSlots | None = None,
    stop: threading.Event | None = None,
    in_flight: InFlight | None = None,
) -> MailboxResult:
    """Copy one mailbox to the end: passes until done, quota-stopped, or failed, or
    until `stop` is set (then `interrupted`, with what was sent checkpointed).
    `in_flight`: appends another worker may have left in flight (InFlight.inherited).

    Never raises for a mailbox-level failure: the result carries the state and the
    error message (which never holds a password)."""
    halted = stop if stop is not None else threading.Event()

    def wait(seconds: float) -> None:
        halted.wait(seconds)  # the wait between passes ends at once on Ctrl-C

    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(options.max_passes),
        wait=wait_exponential(multiplier=1, min=1, max=options.max_wait),
        reraise=True,
        before_sleep=lambda rs: log.warning(
            "pass %d ended: %s; resuming", rs.attempt_number, rs.outcome and rs.outcome.exception()
        ),
        sleep=wait,
    )
    in_flight = in_flight or InFlight()
    try:
        for attempt in retrying:
            with attempt:
                if halted.is_set():
                    return MailboxResult(
                        state=MailboxState.INTERRUPTED, error="stopped by the operator"
                    )
                return _one_pass(
                    open_source, open_target, folder_map, progress, options, in_flight, slots, stop
                )
    except LockLost:
        raise
    except MailboxNotReady as exc:
        return MailboxResult(state=MailboxState.NOT_READY, error=str(exc))
    except SourceIncomplete as exc:
        return exc.result
    except (PermanentError, TransientError) as exc:
        return MailboxResult(state=MailboxState.FAILED, error=str(exc))
    except Exception as exc:
        # A bug or a server answer no adapter foresaw: fail this mailbox, keep the batch.
        # Its text may hold anything (a library's error can quote the command it failed
        # on, password and all): exception_text redacts every live secret from it.
        log.exception("mailbox failed unexpectedly")
        return MailboxResult(
            state=MailboxState.FAILED, error=f"internal error: {exception_text(exc)}"[:500]
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _one_pass(
    open_source: Callable[[], MailboxSource],
    open_target: Callable[[], MailboxTarget],
    folder_map: FolderMap,
    progress: Progress,
    options: CopyOptions,
    in_flight: InFlight,
    slots: ConnectionSlots | None,
    stop: threading.Event | None = None,
) -> MailboxResult:
    try:
        target = open_target()
    except PermanentError as exc:
        # Like the migration consoles: a target we cannot open is "not ready to migrate".
        raise MailboxNotReady(str(exc)) from exc
    try:
        source = open_source()
        try:
            return copy_pass(
                source,
                target,
                folder_map,
                progress,
                options,
                in_flight=in_flight,
                slots=slots,
                stop=stop,
            )
        finally:
            source.close()
    finally:
        target.close()

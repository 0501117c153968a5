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
from concurrent.futures import Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from migrator.errors import (
    CapReached,
    LockLost,
    MailboxNotReady,
    PermanentError,
    TransientError,
)
from migrator.events import EventKind, EventSink, NoEvents
from migrator.foldermap import FolderMap
from migrator.lanes import send
from migrator.listing import Listing, list_mailbox, recognise, refused_note
from migrator.plan import (
    BudgetSplit,
    MessageRef,
    Plan,
    make_plan,
    quota_budget,
    reorderable_bytes,
    send_order,
    take_within_budget,
    within_range,
)
from migrator.report import MailboxResult, MailboxState, SkippedMessage
from migrator.rewrite import RewriteMaps
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
)
from migrator.sources.base import MailboxSource
from migrator.targets.base import MailboxTarget

log = logging.getLogger(__name__)

__all__ = ["Checkpoint", "ConnectionSlots", "CopyOptions", "InFlight", "Progress"]

# Seconds: a held segment or a slow commit lands within this once the path recovers; the
# wait is paid only after a pass that broke with appends in flight.
LATE_COMMIT_GRACE = 30.0
# Connections to each side one mailbox uses at most, by default (`migrator run`); the
# copier itself uses one unless told otherwise.
CONNECTIONS_PER_MAILBOX = 4
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
    listing = list_mailbox(source, target, folder_map, now)
    if in_flight is not None:
        in_flight.settle(options.late_commit_grace)
    checkpoints = progress.checkpoints()
    in_range = [r for r in listing.refs if within_range(r, now, options.since, options.until)]
    recognised = recognise(source, target, in_range, listing.target_of, checkpoints, rewrite, now)
    if recognised:
        progress.recognised(recognised)
    done = set(checkpoints) | {ref.ident for ref, _ in recognised}
    del in_range
    planned = _plan_pass(listing.refs, done, target, progress, options, now)
    listing.refs.clear()  # the plan holds the refs now: one list of them fewer
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
    room = planned.room
    sent, unsent = send(source, target, planned.order, room, options.connections, slots, sending)
    split = planned.split
    left = tuple(unsent) + split.left
    interrupted = stop is not None and stop.is_set() and bool(unsent)
    result = _pass_result(planned, listing, sent, left, interrupted, target.throttled_seconds)
    if sent.undelivered:
        raise _incomplete(result, sent)
    return result


@dataclass(frozen=True)
class _Planned:
    plan: Plan
    split: BudgetSplit
    already_bytes: int
    room: int | None  # plan.reorderable_bytes
    order: tuple[MessageRef, ...]  # plan.send_order


def _plan_pass(
    refs: Sequence[MessageRef],
    done: set[Checkpoint],
    target: MailboxTarget,
    progress: Progress,
    options: CopyOptions,
    now: datetime,
) -> _Planned:
    """What this pass sends, and in what order: newest first, within the date range and
    the quota budget (the target's own room and the activation quota), grouped by folder
    where the quota leaves room to."""
    plan = make_plan(refs, now=now, since=options.since, until=options.until, done=done)
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
    return _Planned(plan, split, already_bytes, room, order)


def _pass_result(
    planned: _Planned,
    listing: Listing,
    sent: Sent,
    left: tuple[MessageRef, ...],
    interrupted: bool,
    throttle_seconds: float,
) -> MailboxResult:
    """How a pass ended: done, quota-stopped (with the newest mail in) or interrupted."""
    plan = planned.plan
    if interrupted:
        state = MailboxState.INTERRUPTED
    else:
        state = MailboxState.QUOTA_STOPPED if left else MailboxState.DONE
    return MailboxResult(
        state=state,
        total_messages=plan.total_messages + len(listing.skipped),
        total_bytes=plan.total_bytes + sum(s.size for s in listing.skipped),
        copied_messages=sent.messages,
        copied_bytes=sent.bytes,
        already_messages=len(plan.already_done),
        already_bytes=planned.already_bytes,
        left_messages=len(left),
        left_bytes=sum(r.size for r in left),
        skipped=tuple(listing.skipped + sent.skipped),
        error=refused_note(listing.refused, len(listing.skipped)),
        rewritten_messages=sent.rewritten_messages,
        rewritten_addresses=sent.rewritten_addresses,
        unparsable_headers=sent.unparsable_headers,
        source_seconds=sent.source_seconds,
        target_seconds=sent.target_seconds,
        throttle_seconds=throttle_seconds,
    )


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


def migrate_mailbox(
    open_source: Callable[[], MailboxSource],
    open_target: Callable[[], MailboxTarget],
    folder_map: FolderMap,
    progress: Progress,
    options: CopyOptions,
    slots: ConnectionSlots | None = None,
    stop: threading.Event | None = None,
    in_flight: InFlight | None = None,
    events: EventSink | None = None,
) -> MailboxResult:
    """Copy one mailbox to the end: passes until done, quota-stopped, or failed, or
    until `stop` is set (then `interrupted`, with what was sent checkpointed).
    `in_flight`: appends another worker may have left in flight (InFlight.inherited).
    `events`: told of each pass, each reconnect and each throttling wait.

    Never raises for a mailbox-level failure: the result carries the state and the
    error message (which never holds a password)."""
    halted = stop if stop is not None else threading.Event()
    told = events or NoEvents()

    def wait(seconds: float) -> None:
        halted.wait(seconds)  # the wait between passes ends at once on Ctrl-C

    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(options.max_passes),
        wait=wait_exponential(multiplier=1, min=1, max=options.max_wait),
        reraise=True,
        before_sleep=lambda rs: _reconnecting(told, rs.attempt_number, rs.outcome),
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
                return _told_pass(
                    told,
                    attempt.retry_state.attempt_number,
                    lambda: _one_pass(
                        open_source, open_target, folder_map, progress, options, in_flight,
                        slots, stop,
                    ),
                )  # fmt: skip
    except LockLost:
        raise
    except CapReached as exc:
        # Not a failure: what was sent is checkpointed; the mailbox goes on at resume_at.
        log.warning("%s; paused until %s", exc, datetime.fromtimestamp(exc.resume_at, UTC))
        return MailboxResult(
            state=MailboxState.PAUSED,
            error=str(exc),
            error_code=exc.code.value,
            resume_at=exc.resume_at,
        )
    except SourceIncomplete as exc:
        return exc.result
    except Exception as exc:
        return _ended_by(exc)
    raise AssertionError("unreachable")  # pragma: no cover


def _ended_by(exc: Exception) -> MailboxResult:
    """The result of a mailbox a pass's error ended (called in its except clause)."""
    if isinstance(exc, MailboxNotReady):
        return MailboxResult(
            state=MailboxState.NOT_READY, error=str(exc), error_code=exc.code.value
        )
    if isinstance(exc, PermanentError | TransientError):
        return MailboxResult(state=MailboxState.FAILED, error=str(exc), error_code=exc.code.value)
    # A bug or a server answer no adapter foresaw: fail this mailbox, keep the batch.
    # Its text may hold anything (a library's error can quote the command it failed
    # on, password and all): exception_text redacts every live secret from it.
    log.exception("mailbox failed unexpectedly")
    return MailboxResult(
        state=MailboxState.FAILED,
        error=f"internal error: {exception_text(exc)}"[:500],
        error_code="INTERNAL",
    )


def _told_pass(told: EventSink, number: int, run: Callable[[], MailboxResult]) -> MailboxResult:
    """One pass, told to the event log: its start, and the throttling it waited out."""
    told.note(EventKind.PASS, f"pass {number}", number=number)
    result = run()
    if result.throttle_seconds > 0:
        told.note(
            EventKind.THROTTLE,
            f"the target asked to wait {result.throttle_seconds:.1f} s in all",
            seconds=result.throttle_seconds,
        )
    return result


def _reconnecting(told: EventSink, number: int, outcome: object) -> None:
    error = outcome.exception() if isinstance(outcome, Future) else None
    log.warning("pass %d ended: %s; resuming", number, error)
    told.note(EventKind.RECONNECT, f"pass {number} ended: {error}; reconnecting", number=number)


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
        raise MailboxNotReady(str(exc), code=exc.code) from exc
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

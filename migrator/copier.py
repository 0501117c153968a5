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

import contextlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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
from migrator.lanes import Opening
from migrator.listing import list_mailbox
from migrator.logingate import LoginGate, gated
from migrator.passcopy import (
    LATE_COMMIT_GRACE,
    UNDELIVERED,
    CopyOptions,
    SourceIncomplete,
    copy_listed,
)
from migrator.plan import LANE_MIN_WINDOWS
from migrator.report import MailboxResult, MailboxState
from migrator.secrets import exception_text
from migrator.sending import (
    GROUPING_WINDOW,
    Checkpoint,
    ConnectionSlots,
    InFlight,
    Progress,
)
from migrator.sources.base import EarlySessionSource, MailboxSource
from migrator.syncpass import remember_folders, sync_pass, with_moves
from migrator.syncstate import PassKind, PassRequest
from migrator.targets.base import MailboxTarget

log = logging.getLogger(__name__)

__all__ = [
    "LATE_COMMIT_GRACE",
    "UNDELIVERED",
    "Checkpoint",
    "ConnectionSlots",
    "CopyOptions",
    "InFlight",
    "Progress",
    "SourceIncomplete",
]

# Connections to each side one mailbox uses at most, by default (`migrator run`); the
# copier itself uses one unless told otherwise.
CONNECTIONS_PER_MAILBOX = 4


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
    batches in flight finish and are checkpointed, and the result is `interrupted`.
    Where the source and the progress keep folder states (an IMAP source, Redis), a pass
    that ends done gives the copies it knows their messages' flags now and records the
    folder states, so the next `migrator sync` reads only what changed since."""
    now = now or datetime.now(UTC)
    opening = _open_early(source, target, options.connections, slots)
    try:
        listing = list_mailbox(source, target, folder_map, now)
        # As syncpass does: the grace of a failed attempt's appends first, then the
        # checkpoints.  The order is not what keeps a message single (only this worker
        # writes checkpoints, and after its tagged OK; a late commit is found by the index
        # read after the grace), but one order in both passes is one thing to reason
        # about.  Read here rather than in copy_listed to know whether this is the
        # mailbox's first pass.
        if in_flight is not None:
            in_flight.settle(options.late_commit_grace)
        checkpoints = progress.checkpoints()
        result = copy_listed(
            source,
            target,
            listing,
            progress,
            options,
            now,
            in_flight=in_flight,
            slots=slots,
            stop=stop,
            checkpoints=checkpoints,
            opening=opening,
        )
    finally:
        if opening is not None:
            opening.close()
    if result.state is not MailboxState.DONE:
        return result
    moves = remember_folders(source, target, listing, progress, first=not checkpoints)
    return with_moves(result, moves)


def _open_early(
    source: MailboxSource, target: MailboxTarget, connections: int, slots: ConnectionSlots | None
) -> Opening | None:
    """The extra pairs of a copy over several connections, opened while the pass lists and
    plans, where the source allows (EarlySessionSource) and holds enough mail for two
    lanes at least (plan.lane_split); None: opened when sending, if wanted then."""
    if connections <= 1 or not isinstance(source, EarlySessionSource):
        return None
    held = source.messages_held()
    if held is None or held < 2 * LANE_MIN_WINDOWS * GROUPING_WINDOW:
        return None
    return Opening(source, target, connections - 1, slots)


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
    request: PassRequest | None = None,
    gated_source: bool = False,
) -> MailboxResult:
    """Copy one mailbox to the end: passes until done, quota-stopped, or failed, or
    until `stop` is set (then `interrupted`, with what was sent checkpointed).
    `in_flight`: appends another worker may have left in flight (InFlight.inherited).
    `events`: told of each pass, each reconnect and each throttling wait.
    `request`: an incremental pass (syncpass.sync_pass) rather than a whole one.
    `gated_source`: `open_source` holds its login in logingate.hold_login() (its
    connector's `gated_login`), so it is connected while the target is opened.

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
                        slots, stop, request, gated_source,
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
    request: PassRequest | None = None,
    gated_source: bool = False,
) -> MailboxResult:
    incremental = request is not None and request.kind is not PassKind.COPY
    source, target = _open_both(
        open_source, open_target, side_by_side=incremental, gated=gated_source
    )
    try:
        if request is not None and incremental:
            return sync_pass(
                source,
                target,
                folder_map,
                progress,
                options,
                request,
                in_flight=in_flight,
                slots=slots,
                stop=stop,
            )
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
        _close_both(source, target)


def _close_both(source: MailboxSource, target: MailboxTarget) -> None:
    """End both sessions at once: the source's on a thread of its own while the target's
    ends (one round trip for the two, not one each); each is closed whatever the other
    raises."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="close-source") as pool:
        closing = pool.submit(source.close)
        try:
            target.close()
        finally:
            closing.result()


def _open_both(
    open_source: Callable[[], MailboxSource],
    open_target: Callable[[], MailboxTarget],
    *,
    side_by_side: bool,
    gated: bool = False,
) -> tuple[MailboxSource, MailboxTarget]:
    """Both ends, the target first (a target that cannot be opened is `not_ready`, and the
    source is then not logged in to); `side_by_side` logs in to both at once, for a pass
    whose time is mostly round trips (an incremental one), each end closed again when
    the other fails.  `gated` (a source that holds its login in logingate.hold_login):
    the source's connection is made while the target is opened, its login sent once the
    target is open, and never if it could not be."""
    if not side_by_side and not gated:
        target = _open_target(open_target)
        try:
            return open_source(), target
        except BaseException:
            target.close()
            raise
    gate = None if side_by_side else LoginGate()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-source") as pool:
        opening = pool.submit(_opened_behind, gate, open_source)
        try:
            target = _open_target(open_target)
        except BaseException:
            if gate is not None:
                gate.close()  # the source stops before its login, and raises
            with contextlib.suppress(Exception):
                opening.result().close()
            raise
        if gate is not None:
            gate.open()
        try:
            return opening.result(), target
        except BaseException:
            target.close()
            raise


def _opened_behind(
    gate: LoginGate | None, open_source: Callable[[], MailboxSource]
) -> MailboxSource:
    if gate is None:
        return open_source()
    with gated(gate):
        return open_source()


def _open_target(open_target: Callable[[], MailboxTarget]) -> MailboxTarget:
    try:
        return open_target()
    except PermanentError as exc:
        # Like the migration consoles: a target we cannot open is "not ready to migrate".
        raise MailboxNotReady(str(exc), code=exc.code) from exc

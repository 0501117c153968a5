"""What a pass does once it has its listing: recognise what the target holds already,
plan newest first within the date range and the quota budget, and send (lanes.py), each
batch checkpointed as it lands.  The first pass (copier.copy_pass) lists the whole
mailbox; an incremental one (syncpass.sync_pass) only what changed."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from migrator.errors import TransientError
from migrator.lanes import Opening, send
from migrator.listing import Listing, recognise, refused_note
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
from migrator.recognition import TargetCopy
from migrator.report import MailboxResult, MailboxState, SkippedMessage
from migrator.rewrite import RewriteMaps
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
from migrator.targets.base import UNKNOWN_QUOTA, MailboxTarget

log = logging.getLogger(__name__)

# Seconds: a held segment or a slow commit lands within this once the path recovers; the
# wait is paid only after a pass that broke with appends in flight.
LATE_COMMIT_GRACE = 30.0
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


def copy_listed(
    source: MailboxSource,
    target: MailboxTarget,
    listing: Listing,
    progress: Progress,
    options: CopyOptions,
    now: datetime,
    *,
    in_flight: InFlight | None = None,
    slots: ConnectionSlots | None = None,
    stop: threading.Event | None = None,
    index: Callable[[str], list[TargetCopy]] | None = None,
    checkpoints: dict[Checkpoint, str | None] | None = None,
    opening: Opening | None = None,
) -> MailboxResult:
    """Recognise, plan and send what `listing` holds; raises TransientError for the
    caller to retry (SourceIncomplete where the source did not send what it listed).
    `index`: how to read a target folder's index (target.index unless told);
    `checkpoints`: those of the listed messages, where the caller read them (else all);
    `opening`: the extra connections, being opened already (lanes.Opening)."""
    rewrite = options.rewrite if options.rewrite and not options.rewrite.is_empty() else None
    if in_flight is not None:
        in_flight.settle(options.late_commit_grace)
    if checkpoints is None:
        checkpoints = progress.checkpoints()
    in_range = [r for r in listing.refs if within_range(r, now, options.since, options.until)]
    recognised = recognise(
        source, target, in_range, listing.target_of, checkpoints, rewrite, now, index=index
    )
    if recognised:
        progress.recognised(
            [(ref, key) for ref, key, _ in recognised], [p for _, _, p in recognised]
        )
    done = set(checkpoints) | {ref.ident for ref, _, _ in recognised}
    planned = _plan_pass(listing.refs, done, target, progress, options, now)
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
    sent, unsent = send(
        source, target, planned.order, planned.room, options.connections, slots, sending, opening
    )
    left = tuple(unsent) + planned.split.left
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
    # Nothing to send (an incremental pass with no new mail): no round trip for the quota.
    quota = target.quota() if plan.to_copy else UNKNOWN_QUOTA
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

"""Sending one mailbox's planned messages over one connection: a reader thread fetching
ahead, the writer batching appends (lanes.py runs several side by side).

The copier hands over the send order; this module fetches, rewrites where asked, appends
in batches, checkpoints each batch that landed (with each message's content key), and
says what was sent, what the quota left, and what the source listed but never sent.
Before each batch it checks that this worker still holds the mailbox (the fence).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from migrator.errors import (
    CapReached,
    MessageRefused,
    QuotaExceeded,
    TransientError,
)
from migrator.inflight import InFlight as InFlight  # re-exported: it was defined here
from migrator.plan import MessageRef, window_full
from migrator.readahead import prefetched
from migrator.recognition import content_key
from migrator.report import SkippedMessage
from migrator.rewrite import RewriteMaps, rewrite_message
from migrator.sources.base import MailboxSource
from migrator.syncstate import LedgerEntry, Placement
from migrator.targets.base import (
    AppendItem,
    GrowingBatchTarget,
    MailboxTarget,
    PlacingTarget,
    TogetherTarget,
)

log = logging.getLogger(__name__)

Checkpoint = tuple[str, int, str]  # (source folder, UIDVALIDITY, the message's id)


class Progress(Protocol):
    """Where the copier reports; state.RedisProgress keeps it in Redis."""

    def checkpoints(self) -> dict[Checkpoint, str | None]:
        """Every message known copied, with the content key of its copy (None where the
        checkpoint predates content keys)."""
        ...

    def planned(
        self, *, total_messages: int, total_bytes: int, done_messages: int, done_bytes: int
    ) -> None: ...

    def folder(self, name: str) -> None: ...

    def fence(self) -> None:
        """Raise LockLost when another worker holds the mailbox now: called before each
        batch of appends, so a worker that was paused past its lock sends nothing more."""
        ...

    def copied(
        self, copies: Sequence[tuple[MessageRef, str | None]], placed: Sequence[str] = ()
    ) -> None:
        """`copies` (one batch: each message and its content key) are at the target:
        checkpoint and count them in one atomic step, refused (LockLost) when another
        worker holds the mailbox now.  `placed`: each one's ledger entry
        (syncstate.LedgerEntry.to_text; "" where the target did not say), if known."""
        ...

    def recognised(
        self, copies: Sequence[tuple[MessageRef, str | None]], placed: Sequence[str] = ()
    ) -> None:
        """`copies` were found at the target without a checkpoint: checkpoint them."""
        ...


class ConnectionSlots(Protocol):
    """The servers' connection caps, shared by every worker (state.py's slots): a copy
    over several connections holds one slot per extra connection."""

    def take(self, wanted: int) -> int:
        """Take up to `wanted` more slots without waiting; how many were taken."""
        ...

    def give_back(self) -> None:
        """Release every slot `take` took."""
        ...


# A batch of appends holds at most this many bytes of message in memory, and the
# reader runs at most this far ahead of the writer.
BATCH_BYTES = 16 * 1024 * 1024
PREFETCH_BYTES = 16 * 1024 * 1024
# Newest first interleaves folders; where the quota allows, the send order groups them
# within windows of this many messages (plan.send_order), so that a batch of appends
# holds a few long runs of one folder rather than many runs of one message.
GROUPING_WINDOW = 100
# A batch of small messages grows (GrowingBatchTarget) only with what is at hand: once it
# holds the target's batch_size and has waited this long (seconds) for the source, it
# goes.  Where the target is the bottleneck the read-ahead holds the next messages and a
# batch grows at once; a slow source (POP3 far away) gains nothing from waiting.
GATHER_SECONDS = 0.2


def _timed(
    messages: Iterator[tuple[MessageRef, bytes]], sent: Sent
) -> Iterator[tuple[MessageRef, bytes]]:
    while True:
        started = time.perf_counter()
        try:
            item = next(messages)
        except StopIteration:
            return
        finally:
            sent.source_seconds += time.perf_counter() - started
        yield item


@dataclass
class Sent:
    """What sending one order did."""

    messages: int = 0
    bytes: int = 0
    skipped: list[SkippedMessage] = field(default_factory=list)
    stopped_at: int | None = None  # index in the order of the first message not sent
    # Listed but never sent by the source (a FETCH answered without them): not copied.
    undelivered: list[MessageRef] = field(default_factory=list)
    rewritten_messages: int = 0
    rewritten_addresses: int = 0
    unparsable_headers: int = 0
    source_seconds: float = 0.0  # waiting on the source's FETCH (in the reader thread)
    target_seconds: float = 0.0  # waiting on the target's APPEND / CreateItem

    def add(self, other: Sent) -> None:
        """Fold in another connection's figures (not `stopped_at`, which is per order)."""
        self.messages += other.messages
        self.bytes += other.bytes
        self.skipped += other.skipped
        self.undelivered += other.undelivered
        self.rewritten_messages += other.rewritten_messages
        self.rewritten_addresses += other.rewritten_addresses
        self.unparsable_headers += other.unparsable_headers
        self.source_seconds += other.source_seconds
        self.target_seconds += other.target_seconds


@dataclass(frozen=True)
class Sending:
    """What every connection of one pass shares."""

    target_of: dict[str, str]  # source folder -> target folder name
    progress: Progress
    now: datetime  # for the dates copies get (MessageRef.append_date)
    rewrite: RewriteMaps | None = None
    in_flight: InFlight | None = None
    stop: threading.Event | None = None  # the operator's Ctrl-C: never set here
    batch_bytes: int = BATCH_BYTES  # bytes of message in one batch of appends, at most
    prefetch_bytes: int = PREFETCH_BYTES  # bytes the reader runs ahead of the writer
    grouping_window: int = GROUPING_WINDOW  # messages (plan.send_order)


def send_one(
    source: MailboxSource,
    target: MailboxTarget,
    fits: tuple[MessageRef, ...],
    sending: Sending,
    *,
    halt: threading.Event | None = None,
    share: int = 1,
    within_room: bool = False,
) -> Sent:
    """Fetch and append in plan order, `target.batch_size` messages at a time.

    On one of `share` connections copying side by side: its batches and read-ahead get
    that share of the memory bounds, and it stops before its next batch once `halt` is
    set (another connection failed, or met the quota) or the operator's `stop` is,
    `stopped_at` then marking where.  `within_room`: the quota certainly has room for
    all of `fits` (plan.reorderable_bytes), so a batch of several folders may go in one
    round trip (TogetherTarget)."""
    batch = _Batch(target, sending, halt, max(1, sending.batch_bytes // share))
    batch.together = within_room and isinstance(target, TogetherTarget)
    ahead = max(1, sending.prefetch_bytes // share)
    reading = prefetched(_timed(source.fetch(fits), batch.sent), ahead)
    try:
        _copy_each(reading, fits, batch, sending)
    except BaseException:
        batch.abandon()  # the batch still in flight: landed if it can be, else left in flight
        raise
    batch.land()
    return batch.sent


def _copy_each(
    reading: Iterator[tuple[MessageRef, bytes]],
    fits: tuple[MessageRef, ...],
    batch: _Batch,
    sending: Sending,
) -> None:
    """send_one's loop: each message read added to the batch, each full batch flushed."""
    expected = 0  # position of the next message the source should send
    current_folder = ""
    try:
        for ref, body in reading:
            # Sources send in the order asked, leaving out what is gone: the next message
            # of `fits` that is `ref` is its place (no index of a million entries aside).
            here = expected
            while fits[here] is not ref:
                here += 1
            batch.sent.undelivered += fits[expected:here]  # the source skipped these
            expected = here + 1
            if ref.placed != current_folder:
                current_folder = ref.placed
                sending.progress.folder(ref.placed)
            batch.add(here, ref, _item(ref, body, sending, batch.sent))
            del body
            if batch.full() and not batch.flush():
                return
    except CapReached:
        if batch.items:  # read within the source's cap: sent before the mailbox pauses
            batch.flush()
        batch.land()
        raise
    batch.sent.undelivered += fits[expected:]  # the source's answers ended early
    if batch.items:
        batch.flush()


def _item(ref: MessageRef, body: bytes, sending: Sending, sent: Sent) -> AppendItem:
    """What to append for `ref`: its bytes (rewritten where asked), flags, date, key."""
    if sending.rewrite is not None:
        rewritten = rewrite_message(body, sending.rewrite)
        if rewritten.changed:
            body = rewritten.message
            sent.rewritten_messages += 1
            sent.rewritten_addresses += rewritten.addresses_rewritten
        sent.unparsable_headers += rewritten.headers_unparsable
        del rewritten
    return AppendItem(
        sending.target_of[ref.placed],
        body,
        ref.flags,
        ref.append_date(sending.now),
        content_key(body, complete=True),
    )


class _Batch:
    """The appends one connection has gathered, sent and checkpointed together.  With a
    TogetherTarget within the quota's room (`together`), a batch is written before the
    last one's answers are in: two batches in flight, each fenced before it is written
    and checkpointed only once its answers are in, in order."""

    def __init__(
        self,
        target: MailboxTarget,
        sending: Sending,
        halt: threading.Event | None,
        max_bytes: int,
    ) -> None:
        self.target, self.sending, self.halt, self.max_bytes = target, sending, halt, max_bytes
        self.sent = Sent()
        # A batch of target.batch_size small messages takes more (GrowingBatchTarget).
        self.small_most, self.small_bytes = 0, 0
        if isinstance(target, GrowingBatchTarget):
            self.small_most, self.small_bytes = target.small_batch_size, target.small_batch_bytes
        # Each with its place in `fits`, for `stopped_at`.
        self.items: list[tuple[int, MessageRef, AppendItem]] = []
        self.bytes = 0
        self.since = 0.0  # when the batch's first message was added (time.monotonic)
        self.together = False  # written with TogetherTarget.send_together
        # The batch written whose answers are not read yet: its items, the target's
        # handle, and when it was written.
        self.pending: tuple[list[tuple[int, MessageRef, AppendItem]], Any, float] | None = None

    def add(self, position: int, ref: MessageRef, item: AppendItem) -> None:
        if not self.items:
            self.since = time.monotonic()
        self.items.append((position, ref, item))
        self.bytes += ref.size

    def full(self) -> bool:
        count, most = len(self.items), self.target.batch_size
        if self.bytes >= self.max_bytes or window_full(
            count, self.bytes, most=most, small_most=self.small_most, small=self.small_bytes
        ):
            return True
        return count >= most and time.monotonic() - self.since >= GATHER_SECONDS

    def flush(self) -> bool:
        """Append the batch (fenced first) and checkpoint what landed; False once this
        connection stops: halted, stopped by the operator, or the target is full."""
        sent, stop = self.sent, self.sending.stop
        if (self.halt is not None and self.halt.is_set()) or (stop is not None and stop.is_set()):
            if self.land():
                sent.stopped_at = self.items[0][0]
            return False
        self.sending.progress.fence()
        items, self.items, self.bytes = self.items, [], 0
        if self.together and isinstance(self.target, TogetherTarget):
            return self._write(items, self.target)
        started = time.perf_counter()
        try:
            outcomes = self.target.append_batch([item for _, _, item in items])
        except TransientError:
            self._lost(items)
            raise
        sent.target_seconds += time.perf_counter() - started
        return self._checkpoint(items, outcomes)

    def _write(
        self, items: list[tuple[int, MessageRef, AppendItem]], target: TogetherTarget
    ) -> bool:
        """Write `items` with the last batch's answers still out; then land that one.
        Within the quota's room their order is free: each folder's messages go together
        (in their order), one APPEND, one transaction at the target, per folder."""
        firsts: dict[str, int] = {}
        for _, _, item in items:
            firsts.setdefault(item.folder, len(firsts))
        if len(firsts) > 1:
            items.sort(key=lambda entry: firsts[entry[2].folder])
        started = time.perf_counter()
        try:
            handle = target.send_together([item for _, _, item in items])
        except TransientError:
            self._lost(items)
            raise
        self.sent.target_seconds += time.perf_counter() - started
        previous, self.pending = self.pending, (items, handle, started)
        if previous is None:
            return True
        if not self._land(previous, target):
            self.land()  # the batch just written: its answers read, what it stored counted
            return False
        return True

    def land(self) -> bool:
        """Read the answers of the batch in flight, if any, and checkpoint what landed;
        False once this connection stops (the target is full)."""
        if self.pending is None or not isinstance(self.target, TogetherTarget):
            return self.sent.stopped_at is None
        pending, self.pending = self.pending, None
        return self._land(pending, self.target)

    def _land(
        self,
        pending: tuple[list[tuple[int, MessageRef, AppendItem]], Any, float],
        target: TogetherTarget,
    ) -> bool:
        items, handle, _ = pending
        started = time.perf_counter()
        try:
            outcomes = target.land_together(handle)
        except TransientError:
            self._lost(items)
            raise
        self.sent.target_seconds += time.perf_counter() - started
        stopped = self.sent.stopped_at is not None
        going = self._checkpoint(items, outcomes)
        return going and not stopped

    def abandon(self) -> None:
        """The pass is ending on an error: land the batch in flight if its answers can
        still be read, else leave it to the next pass as in flight (InFlight)."""
        if self.pending is None:
            return
        items = self.pending[0]
        try:
            self.land()
        except Exception as exc:  # the error that ends the pass is raised by the caller
            log.info("a batch in flight was not confirmed: %s", exc)
            self._lost(items)

    def _lost(self, items: list[tuple[int, MessageRef, AppendItem]]) -> None:
        """The connection broke with `items` (and the batch in flight) written: any of
        them may still be committed."""
        if self.sending.in_flight is None:
            return
        folders = {item.folder for _, _, item in items}
        if self.pending is not None:
            folders |= {item.folder for _, _, item in self.pending[0]}
        self.sending.in_flight.lost(folders)

    def _checkpoint(
        self, items: list[tuple[int, MessageRef, AppendItem]], outcomes: Sequence[object]
    ) -> bool:
        """Checkpoint what of `items` the target stored; False once it is full."""
        sent = self.sent
        placements = self.target.placed() if isinstance(self.target, PlacingTarget) else None
        stored, placed = self._stored(items, outcomes, placements)
        self.sending.progress.copied(stored, placed)
        sent.messages += len(stored)
        sent.bytes += sum(r.size for r, _ in stored)
        return sent.stopped_at is None

    def _stored(
        self,
        items: list[tuple[int, MessageRef, AppendItem]],
        outcomes: Sequence[object],
        placements: Sequence[Placement | None] | None,
    ) -> tuple[list[tuple[MessageRef, str | None]], list[str]]:
        """The batch's messages the target stored, with their keys and ledger entries;
        a refused one is skipped and named, a full target stops this and every later
        message."""
        stored: list[tuple[MessageRef, str | None]] = []
        placed: list[str] = []
        count = len(items)
        where = ([*placements] if placements is not None else [] + [None] * count)[:count]
        where += [None] * (count - len(where))
        for (position, ref, item), outcome, at in zip(items, outcomes, where, strict=True):
            if isinstance(outcome, QuotaExceeded):
                # The server's own count is the authority (rounding, new mail arriving):
                # this message and every later one are left (the earliest such stop, where
                # two batches were in flight).
                if self.sent.stopped_at is None or position < self.sent.stopped_at:
                    self.sent.stopped_at = position
                if self.halt is not None:
                    self.halt.set()
                break
            if isinstance(outcome, MessageRefused):
                log.warning("skipped message uid %s in %r: %s", ref.uid, ref.folder, outcome)
                self.sent.skipped.append(
                    SkippedMessage(ref.folder, ref.uid, ref.size, str(outcome))
                )
                continue
            stored.append((ref, item.key))
            placed.append(LedgerEntry(at, ref.flags, ours=True).to_text() if at else "")
        return stored, placed

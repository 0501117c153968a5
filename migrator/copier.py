"""Drives one mailbox: source -> plan -> target, with checkpoints and progress.

One pass: list every source folder and message, map folders, index what the
target already holds, plan newest first within the date range and the quota
budget, then copy in that order, checkpointing each message as it lands.  A
transient failure ends the pass; `migrate_mailbox` reconnects and runs another
pass, which starts from the checkpoints and the target's index, so nothing is
copied twice and nothing is skipped.  When the failure left appends in flight,
the next pass first gives the target a grace period to commit them late.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

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
    MessageRefused,
    MigrationError,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.foldermap import FolderMap
from migrator.plan import (
    MessageKey,
    MessageRef,
    lane_split,
    make_plan,
    message_key,
    quota_budget,
    reorderable_bytes,
    send_order,
    take_within_budget,
    within_range,
)
from migrator.report import MailboxResult, MailboxState, SkippedMessage
from migrator.rewrite import RewriteMaps, header_block_end, rewrite_message
from migrator.sources.base import MailboxSource
from migrator.targets.base import AppendItem, MailboxTarget

log = logging.getLogger(__name__)

Checkpoint = tuple[str, int, int]  # (source folder, UIDVALIDITY, UID)

# Seconds: a held segment or a slow commit lands within this once the path recovers; the
# wait is paid only after a pass that broke with appends in flight.
LATE_COMMIT_GRACE = 30.0
# Connections to each side one mailbox uses at most, by default (`migrator run`); the
# copier itself uses one unless told otherwise.
CONNECTIONS_PER_MAILBOX = 4


class Progress(Protocol):
    """Where the copier reports; state.RedisProgress keeps it in Redis."""

    def checkpoints(self) -> frozenset[Checkpoint]: ...

    def planned(
        self, *, total_messages: int, total_bytes: int, done_messages: int, done_bytes: int
    ) -> None: ...

    def folder(self, name: str) -> None: ...

    def copied(self, refs: Sequence[MessageRef]) -> None:
        """`refs` (one batch) are at the target: checkpoint and count them in one atomic
        step, so a checkpoint costs one round trip per batch rather than per message."""
        ...

    def recognised(self, refs: list[MessageRef]) -> None:
        """`refs` were found at the target without a checkpoint: checkpoint them."""
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


@dataclass
class InFlight:
    """Appends whose outcome a failed pass never learnt: the target may still commit them.

    Kept across the passes of one mailbox; the next pass waits out the grace before it
    indexes the target, so messages committed late count as copied, not as to send."""

    folders: set[str] = field(default_factory=set)  # target folders of the batch
    given_up: float | None = None  # time.monotonic() when the pass gave up on them
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def lost(self, folders: set[str]) -> None:
        with self._lock:  # connections of one pass fail side by side
            self.folders |= folders
            self.given_up = time.monotonic()

    def settle(self, grace: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Wait for what is left of `grace` since the appends were given up, then forget them."""
        if self.given_up is None:
            return
        left = self.given_up + grace - time.monotonic()
        if left > 0:
            log.warning(
                "appends to %s were in flight when the last pass failed: waiting %.1f s "
                "for a late commit before indexing the target again",
                ", ".join(repr(f) for f in sorted(self.folders)),
                left,
            )
            sleep(left)
        self.folders.clear()
        self.given_up = None


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
    folders = source.list_folders()
    target_of: dict[str, str] = {}
    refs: list[MessageRef] = []
    refused: dict[str, str] = {}  # source folder -> why the target would not make it
    skipped: list[SkippedMessage] = []  # their messages
    for folder in folders:
        listed = source.list_messages(folder)
        mapped = folder_map.map(folder.path, folder.special_use)
        try:
            target_of[folder.name] = target.open_folder(mapped)
        except FolderRefused as exc:
            # Only that folder fails: its mail is named as skipped, the other folders go on.
            log.warning("skipped folder %r: %s", folder.name, exc)
            refused[folder.name] = str(exc)
            skipped += [
                SkippedMessage(r.folder, r.uid, r.size, str(exc))
                for r in listed
                if within_range(r, now, options.since, options.until)
            ]
        else:
            refs.extend(listed)
    if in_flight is not None:
        in_flight.settle(options.late_commit_grace)
    present: dict[str, Counter[MessageKey]] = {
        name: target.index(name) for name in sorted(set(target_of.values()))
    }
    checkpointed = progress.checkpoints()
    rewrite = options.rewrite if options.rewrite and not options.rewrite.is_empty() else None
    plan = make_plan(
        refs,
        now=now,
        since=options.since,
        until=options.until,
        checkpointed=checkpointed,
        present_at_target=present,
        target_of=target_of,
        target_keys=_rewritten_keys(source, refs, present, target_of, rewrite),
    )
    recognised = [
        r for r in plan.already_done if (r.folder, r.uidvalidity, r.uid) not in checkpointed
    ]
    if recognised:
        progress.recognised(recognised)
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
    order = send_order(split.fits, room, GROUPING_WINDOW, BATCH_BYTES)

    wanted = len(lane_split(order, room, options.connections, GROUPING_WINDOW, BATCH_BYTES).lanes)
    if wanted > 1:
        sent, unsent = _send_lanes(
            source,
            target,
            order,
            room,
            wanted,
            slots,
            target_of,
            progress,
            rewrite,
            in_flight,
            stop,
        )
    else:
        sent = _send(source, target, order, target_of, progress, rewrite, in_flight, stop=stop)
        unsent = list(order[sent.stopped_at :]) if sent.stopped_at is not None else []
    left = tuple(unsent) + split.left
    if stop is not None and stop.is_set() and unsent:
        state = MailboxState.INTERRUPTED
    else:
        state = MailboxState.QUOTA_STOPPED if left else MailboxState.DONE
    return MailboxResult(
        state=state,
        total_messages=plan.total_messages + len(skipped),
        total_bytes=plan.total_bytes + sum(s.size for s in skipped),
        copied_messages=sent.messages,
        copied_bytes=sent.bytes,
        already_messages=len(plan.already_done),
        already_bytes=already_bytes,
        left_messages=len(left),
        left_bytes=sum(r.size for r in left),
        skipped=tuple(skipped + sent.skipped),
        error=_refused_note(refused, len(skipped)),
        rewritten_messages=sent.rewritten_messages,
        rewritten_addresses=sent.rewritten_addresses,
        unparsable_headers=sent.unparsable_headers,
        source_seconds=sent.source_seconds,
        target_seconds=sent.target_seconds,
        throttle_seconds=target.throttled_seconds,
    )


def _refused_note(refused: dict[str, str], messages: int) -> str | None:
    """One line for the status table: the folders the target refused, and why."""
    if not refused:
        return None
    first = next(iter(refused.values()))
    return f"{messages} messages skipped in {len(refused)} refused folder(s); {first}"


def _rewritten_keys(
    source: MailboxSource,
    refs: list[MessageRef],
    present: dict[str, Counter[MessageKey]],
    target_of: dict[str, str],
    rewrite: RewriteMaps | None,
) -> dict[tuple[str, int], MessageKey] | None:
    """The keys messages have at the target once rewritten, for recognising them there.

    Only needed where a target folder already holds mail; the header blocks are read
    then, and only then, since rewriting touches nothing else."""
    if rewrite is None:
        return None
    wanted = [r for r in refs if r.key is not None and present.get(target_of[r.folder])]
    keys: dict[tuple[str, int], MessageKey] = {}
    for ref, header in source.headers(wanted):
        keys[(ref.folder, ref.uid)] = target_key(ref, header, rewrite)
    return keys


def target_key(ref: MessageRef, header: bytes, rewrite: RewriteMaps) -> MessageKey:
    """`ref`'s key once its header block `header` is rewritten (Message-ID never is)."""
    assert ref.key is not None
    new_header = rewrite_message(header, rewrite).message
    size = ref.size + len(new_header) - len(header)
    if ref.key[0] == "mid":
        return ("mid", ref.key[1], size)
    return message_key(None, size, new_header)


def _header_of(message: bytes) -> bytes:
    """The header block with its empty line, as IMAP's BODY[HEADER] gives it."""
    end = header_block_end(message)
    for blank in (b"\r\n", b"\n"):
        if message.startswith(blank, end):
            return message[: end + len(blank)]
    return message[:end]


# A batch of appends holds at most this many bytes of message in memory, and the
# reader runs at most this far ahead of the writer.
BATCH_BYTES = 16 * 1024 * 1024
PREFETCH_BYTES = 16 * 1024 * 1024
# Newest first interleaves folders; where the quota allows, the send order groups them
# within windows of this many messages (plan.send_order), so that a batch of appends
# holds a few long runs of one folder rather than many runs of one message.
GROUPING_WINDOW = 100


def _timed(
    messages: Iterator[tuple[MessageRef, bytes]], sent: _Sent
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


def prefetched(
    messages: Iterator[tuple[MessageRef, bytes]], max_bytes: int
) -> Iterator[tuple[MessageRef, bytes]]:
    """Read ahead in a thread so source reads and target writes overlap.

    At most `max_bytes` wait in between (always at least one message, however big),
    so memory stays flat.  An error in the reader reaches the consumer in order."""
    lock = threading.Condition()
    waiting: collections.deque[tuple[MessageRef, bytes]] = collections.deque()
    state: dict[str, Any] = {"bytes": 0, "done": False, "error": None, "stop": False}

    def read() -> None:
        try:
            for ref, body in messages:
                with lock:
                    while state["bytes"] >= max_bytes and waiting and not state["stop"]:
                        lock.wait()
                    if state["stop"]:
                        return
                    waiting.append((ref, body))
                    state["bytes"] += len(body)
                    lock.notify_all()
        except BaseException as exc:  # handed to the consumer, raised there
            with lock:
                state["error"] = exc
        finally:
            with lock:
                state["done"] = True
                lock.notify_all()

    reader = threading.Thread(target=read, name="prefetch", daemon=True)
    reader.start()
    try:
        while True:
            with lock:
                while not waiting and not state["done"]:
                    lock.wait()
                if waiting:
                    ref, body = waiting.popleft()
                    state["bytes"] -= len(body)
                    lock.notify_all()
                elif state["error"] is not None:
                    raise state["error"]
                else:
                    return
            yield ref, body
            del body
    finally:
        with lock:
            state["stop"] = True
            lock.notify_all()
        reader.join()


@dataclass
class _Sent:
    messages: int = 0
    bytes: int = 0
    skipped: list[SkippedMessage] = field(default_factory=list)
    stopped_at: int | None = None  # index in the send order of the first message the quota refused
    rewritten_messages: int = 0
    rewritten_addresses: int = 0
    unparsable_headers: int = 0
    source_seconds: float = 0.0  # waiting on the source's FETCH (in the reader thread)
    target_seconds: float = 0.0  # waiting on the target's APPEND / CreateItem

    def add(self, other: _Sent) -> None:
        """Fold in another connection's figures (not `stopped_at`, which is per order)."""
        self.messages += other.messages
        self.bytes += other.bytes
        self.skipped += other.skipped
        self.rewritten_messages += other.rewritten_messages
        self.rewritten_addresses += other.rewritten_addresses
        self.unparsable_headers += other.unparsable_headers
        self.source_seconds += other.source_seconds
        self.target_seconds += other.target_seconds


def _send(
    source: MailboxSource,
    target: MailboxTarget,
    fits: tuple[MessageRef, ...],
    target_of: dict[str, str],
    progress: Progress,
    rewrite: RewriteMaps | None = None,
    in_flight: InFlight | None = None,
    *,
    halt: threading.Event | None = None,
    stop: threading.Event | None = None,
    share: int = 1,
) -> _Sent:
    """Fetch and append in plan order, `target.batch_size` messages at a time.

    On one of `share` connections copying side by side: its batches and read-ahead get
    that share of the memory bounds, and it stops before its next batch once `halt` is
    set (another connection failed, or met the quota) or `stop` is (the operator's;
    never set here), `stopped_at` then marking where."""
    sent = _Sent()
    max_batch_bytes = max(1, BATCH_BYTES // share)
    position = {id(ref): index for index, ref in enumerate(fits)}
    batch: list[tuple[MessageRef, AppendItem]] = []
    batch_bytes = 0
    current_folder = ""

    def flush() -> bool:
        nonlocal batch_bytes
        if (halt is not None and halt.is_set()) or (stop is not None and stop.is_set()):
            sent.stopped_at = position[id(batch[0][0])]
            return False
        started = time.perf_counter()
        try:
            outcomes = target.append_batch([item for _, item in batch])
        except TransientError:
            # The connection broke with the batch sent: any of it may still be committed.
            if in_flight is not None:
                in_flight.lost({item.folder for _, item in batch})
            raise
        sent.target_seconds += time.perf_counter() - started
        stored: list[MessageRef] = []
        for (ref, _), outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, QuotaExceeded):
                # The server's own count is the authority (rounding, new mail arriving):
                # this message and every later one are left.
                sent.stopped_at = position[id(ref)]
                if halt is not None:
                    halt.set()
                break
            if isinstance(outcome, MessageRefused):
                log.warning("skipped message uid %s in %r: %s", ref.uid, ref.folder, outcome)
                sent.skipped.append(SkippedMessage(ref.folder, ref.uid, ref.size, str(outcome)))
                continue
            stored.append(ref)
        progress.copied(stored)
        sent.messages += len(stored)
        sent.bytes += sum(r.size for r in stored)
        if sent.stopped_at is not None:
            return False
        batch.clear()
        batch_bytes = 0
        return True

    reading = prefetched(_timed(source.fetch(fits), sent), max(1, PREFETCH_BYTES // share))
    for ref, body in reading:
        if ref.folder != current_folder:
            current_folder = ref.folder
            progress.folder(ref.folder)
        key = ref.key
        if rewrite is not None:
            rewritten = rewrite_message(body, rewrite)
            if rewritten.changed:
                key = target_key(ref, _header_of(body), rewrite) if ref.key else None
                body = rewritten.message
                sent.rewritten_messages += 1
                sent.rewritten_addresses += rewritten.addresses_rewritten
            sent.unparsable_headers += rewritten.headers_unparsable
            del rewritten
        # POP3 has no INTERNALDATE: the Date header is the best arrival time left.
        item = AppendItem(
            target_of[ref.folder], body, ref.flags, ref.internaldate or ref.date_header, key
        )
        batch.append((ref, item))
        batch_bytes += ref.size
        del body, item
        if (len(batch) >= target.batch_size or batch_bytes >= max_batch_bytes) and not flush():
            return sent
    if batch:
        flush()
    return sent


def _send_lanes(
    source: MailboxSource,
    target: MailboxTarget,
    order: tuple[MessageRef, ...],
    room: int | None,
    wanted: int,
    slots: ConnectionSlots | None,
    target_of: dict[str, str],
    progress: Progress,
    rewrite: RewriteMaps | None,
    in_flight: InFlight | None,
    stop: threading.Event | None = None,
) -> tuple[_Sent, list[MessageRef]]:
    """Send `order` over up to `wanted` pairs of connections side by side (the first pair
    `source`/`target`), dealt by `lane_split`, then its tail on the first pair; what was
    sent, and what was not (a quota stop).  Extra connections are opened only as far as
    the adapters and the servers' connection slots allow; with none, one lane it is."""
    granted = wanted - 1 if slots is None else slots.take(wanted - 1)
    pairs: list[tuple[MailboxSource, MailboxTarget]] = []
    try:
        pairs = _open_sessions(source, target, granted)
        split = lane_split(order, room, len(pairs) + 1, GROUPING_WINDOW, BATCH_BYTES)
        if len(split.lanes) > 1:
            log.info("copying over %d connections", len(split.lanes))
        halt = threading.Event()
        results: list[_Sent | BaseException | None] = [None] * len(split.lanes)

        def run(index: int, lane_source: MailboxSource, lane_target: MailboxTarget) -> None:
            try:
                results[index] = _send(
                    lane_source,
                    lane_target,
                    split.lanes[index],
                    target_of,
                    progress,
                    rewrite,
                    in_flight,
                    halt=halt,
                    stop=stop,
                    share=len(split.lanes),
                )
            except BaseException as exc:  # raised below, once every lane has stopped
                results[index] = exc
                halt.set()

        threads = [
            threading.Thread(target=run, args=(i, *pair), name=f"lane-{i}", daemon=True)
            for i, pair in enumerate(pairs[: len(split.lanes) - 1], start=1)
        ]
        for thread in threads:
            thread.start()
        run(0, source, target)
        for thread in threads:
            thread.join()
    finally:
        for pair in pairs:
            for end in pair:
                _close_quietly(end)
        if slots is not None:
            slots.give_back()
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise _gravest(failures)
    total = _Sent()
    unsent: list[MessageRef] = []
    for lane, result in zip(split.lanes, results, strict=True):
        assert isinstance(result, _Sent)
        total.add(result)
        if result.stopped_at is not None:
            unsent.extend(lane[result.stopped_at :])
    if unsent:  # the quota stopped a lane: the tail, all older, waits too
        return total, unsent + list(split.tail)
    if split.tail:
        rest = _send(source, target, split.tail, target_of, progress, rewrite, in_flight, stop=stop)
        total.add(rest)
        if rest.stopped_at is not None:
            unsent.extend(split.tail[rest.stopped_at :])
    return total, unsent


def _open_sessions(
    source: MailboxSource, target: MailboxTarget, count: int
) -> list[tuple[MailboxSource, MailboxTarget]]:
    """Up to `count` more (source, target) connections; fewer where an adapter allows
    no more, or a server refuses one (a per-user connection limit): the copy goes on
    over those it has."""
    pairs: list[tuple[MailboxSource, MailboxTarget]] = []
    for _ in range(count):
        try:
            more_source = source.session()
            if more_source is None:
                break
            try:
                more_target = target.session()
            except MigrationError:
                _close_quietly(more_source)
                raise
            if more_target is None:
                _close_quietly(more_source)
                break
        except MigrationError as exc:
            log.info("no further connection for this mailbox: %s", exc)
            break
        pairs.append((more_source, more_target))
    return pairs


def _close_quietly(end: MailboxSource | MailboxTarget) -> None:
    try:
        end.close()
    except MigrationError as exc:
        log.info("closing an extra connection: %s", exc)


def _gravest(failures: list[BaseException]) -> BaseException:
    """The failure that decides the pass when lanes failed side by side: a lost lock
    first, then anything that is not worth another pass, then the first transient."""
    for failure in failures:
        if isinstance(failure, LockLost):
            return failure
    for failure in failures:
        if not isinstance(failure, TransientError):
            return failure
    return failures[0]


def migrate_mailbox(
    open_source: Callable[[], MailboxSource],
    open_target: Callable[[], MailboxTarget],
    folder_map: FolderMap,
    progress: Progress,
    options: CopyOptions,
    slots: ConnectionSlots | None = None,
    stop: threading.Event | None = None,
) -> MailboxResult:
    """Copy one mailbox to the end: passes until done, quota-stopped, or failed, or
    until `stop` is set (then `interrupted`, with what was sent checkpointed).

    Never raises for a mailbox-level failure: the result carries the state and the
    error message (which never holds a password)."""
    halted = stop if stop is not None else threading.Event()
    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_after_attempt(options.max_passes),
        wait=wait_exponential(multiplier=1, min=1, max=options.max_wait),
        reraise=True,
        before_sleep=lambda rs: log.warning(
            "pass %d ended: %s; resuming", rs.attempt_number, rs.outcome and rs.outcome.exception()
        ),
        sleep=lambda seconds: None if halted.wait(seconds) else None,  # ends at once on Ctrl-C
    )
    in_flight = InFlight()
    try:
        for attempt in retrying:
            with attempt:
                if halted.is_set():
                    return MailboxResult(state=MailboxState.INTERRUPTED, error="interrupted")
                return _one_pass(
                    open_source, open_target, folder_map, progress, options, in_flight, slots, stop
                )
    except LockLost:
        raise
    except MailboxNotReady as exc:
        return MailboxResult(state=MailboxState.NOT_READY, error=str(exc))
    except (PermanentError, TransientError) as exc:
        return MailboxResult(state=MailboxState.FAILED, error=str(exc))
    except Exception as exc:
        # A bug or a server answer no adapter foresaw: fail this mailbox, keep the batch.
        log.exception("mailbox failed unexpectedly")
        return MailboxResult(state=MailboxState.FAILED, error=f"internal error: {exc!r}"[:500])
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

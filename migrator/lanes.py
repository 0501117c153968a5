"""Sending over several connections side by side: the send order dealt to lanes
(plan.lane_split), each lane a pair of source and target connections running
sending.send_one, then the tail on the first pair."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from migrator.errors import LockLost, MigrationError, TransientError
from migrator.plan import MessageRef, lane_split
from migrator.sending import ConnectionSlots, Sending, Sent, send_one
from migrator.sources.base import MailboxSource
from migrator.targets.base import MailboxTarget

log = logging.getLogger(__name__)


Pair = tuple[MailboxSource, MailboxTarget]


class Opening:
    """Up to `count` more pairs of connections opened in a thread from the start of a pass,
    while it lists and plans (at a distance, a TLS handshake and two logins cost a few
    round trips the copy would otherwise wait for); `pairs` waits for them.  Whoever made
    it calls `close` at the end: it logs out of every pair and gives the slots back."""

    def __init__(
        self,
        source: MailboxSource,
        target: MailboxTarget,
        count: int,
        slots: ConnectionSlots | None,
    ) -> None:
        self._slots = slots
        granted = count if slots is None else slots.take(count)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="open-early")
        self._opening = self._pool.submit(_open_sessions, source, target, granted)
        self._closed = False

    def pairs(self) -> list[Pair]:
        """The pairs opened (fewer where a server refused more); raises what failed."""
        return self._opening.result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._opening.exception() is None:
                _close_pairs(self._opening.result())
        finally:
            self._pool.shutdown()
            if self._slots is not None:
                self._slots.give_back()


def send(
    source: MailboxSource,
    target: MailboxTarget,
    order: tuple[MessageRef, ...],
    room: int | None,
    connections: int,
    slots: ConnectionSlots | None,
    sending: Sending,
    opening: Opening | None = None,
) -> tuple[Sent, list[MessageRef]]:
    """Send `order` (see plan.send_order), over up to `connections` pairs of connections
    where `room` (plan.reorderable_bytes) lets lanes go side by side: what was sent, and
    what was not (the quota, or the operator, stopped it).  `opening`: the extra pairs,
    opened already (else they are opened here, as `slots` allow)."""
    split = lane_split(order, room, connections, sending.grouping_window, sending.batch_bytes)
    wanted = len(split.lanes)
    if wanted > 1:
        return _send_lanes(source, target, order, room, wanted, slots, sending, opening)
    sent = send_one(source, target, order, sending, within_room=room is None)
    return sent, list(order[sent.stopped_at :]) if sent.stopped_at is not None else []


def _send_lanes(
    source: MailboxSource,
    target: MailboxTarget,
    order: tuple[MessageRef, ...],
    room: int | None,
    wanted: int,
    slots: ConnectionSlots | None,
    sending: Sending,
    opening: Opening | None = None,
) -> tuple[Sent, list[MessageRef]]:
    """Send `order` over up to `wanted` pairs of connections side by side (the first pair
    `source`/`target`), dealt by `lane_split`, then its tail on the first pair; what was
    sent, and what was not (a quota stop).  Extra connections are opened only as far as
    the adapters and the servers' connection slots allow; with none, one lane it is."""
    if opening is None:
        opening = Opening(source, target, wanted - 1, slots)
    pairs: list[Pair] = []
    try:
        pairs = opening.pairs()[: wanted - 1]
        split = lane_split(
            order, room, len(pairs) + 1, sending.grouping_window, sending.batch_bytes
        )
        if len(split.lanes) > 1:
            log.info("copying over %d connections", len(split.lanes))
        # Lanes hold only what the quota certainly has room for; one lane, the whole order.
        within_room = len(split.lanes) > 1 or room is None
        results = _run_lanes(split.lanes, [(source, target), *pairs], sending, within_room)
    finally:
        opening.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    if failures:
        raise _gravest(failures)
    total = Sent()
    unsent: list[MessageRef] = []
    for lane, result in zip(split.lanes, results, strict=True):
        assert isinstance(result, Sent)
        total.add(result)
        if result.stopped_at is not None:
            unsent.extend(lane[result.stopped_at :])
    if unsent:  # the quota (or the operator) stopped a lane: the tail, all older, waits too
        return total, unsent + list(split.tail)
    if split.tail:
        rest = send_one(source, target, split.tail, sending)
        total.add(rest)
        if rest.stopped_at is not None:
            unsent.extend(split.tail[rest.stopped_at :])
    return total, unsent


def _run_lanes(
    lanes: tuple[tuple[MessageRef, ...], ...],
    ends: list[tuple[MailboxSource, MailboxTarget]],
    sending: Sending,
    within_room: bool,
) -> list[Sent | BaseException | None]:
    """Each lane on its pair of connections (the first in this thread), side by side: a
    lane that fails or meets the quota halts the others before their next batch."""
    halt = threading.Event()
    results: list[Sent | BaseException | None] = [None] * len(lanes)

    def run(index: int, lane_source: MailboxSource, lane_target: MailboxTarget) -> None:
        try:
            results[index] = send_one(
                lane_source,
                lane_target,
                lanes[index],
                sending,
                halt=halt,
                share=len(lanes),
                within_room=within_room,
            )
        except BaseException as exc:  # raised by the caller, once every lane has stopped
            results[index] = exc
            halt.set()

    threads = [
        threading.Thread(target=run, args=(i, *pair), name=f"lane-{i}", daemon=True)
        for i, pair in enumerate(ends[1 : len(lanes)], start=1)
    ]
    for thread in threads:
        thread.start()
    run(0, *ends[0])
    for thread in threads:
        thread.join()
    return results


def _open_sessions(
    source: MailboxSource, target: MailboxTarget, count: int
) -> list[tuple[MailboxSource, MailboxTarget]]:
    """Up to `count` more (source, target) connections, opened side by side (each is a
    TLS handshake and a login on both ends: round trips that one after another cost a
    copy between two sites a third of a second); fewer where an adapter allows no more,
    or a server refuses one (a per-user connection limit): the copy goes on over those
    it has."""
    if count <= 0:
        return []
    if count == 1:
        pair = _open_pair(source, target)
        return [] if pair is None else [pair]
    with ThreadPoolExecutor(max_workers=count, thread_name_prefix="open-lane") as pool:
        futures = [pool.submit(_open_pair, source, target) for _ in range(count)]
    pairs = [pair for f in futures if f.exception() is None and (pair := f.result()) is not None]
    failed = next((f.exception() for f in futures if f.exception() is not None), None)
    if failed is not None:  # not the server's refusal (that is None): nothing is kept
        _close_pairs(pairs)
        raise failed
    return pairs


def _open_pair(
    source: MailboxSource, target: MailboxTarget
) -> tuple[MailboxSource, MailboxTarget] | None:
    """One more (source, target) pair, or None (logged) where it cannot be had."""
    try:
        more_source = source.session()
        if more_source is None:
            return None
        try:
            more_target = target.session()
        except MigrationError:
            _close_quietly(more_source)
            raise
        if more_target is None:
            _close_quietly(more_source)
            return None
    except MigrationError as exc:
        log.info("no further connection for this mailbox: %s", exc)
        return None
    return more_source, more_target


def _close_pairs(pairs: list[tuple[MailboxSource, MailboxTarget]]) -> None:
    """Log out of every end of `pairs`, side by side (a LOGOUT waits for its answer)."""
    ends = [end for pair in pairs for end in pair]
    if len(ends) <= 1:
        for end in ends:
            _close_quietly(end)
        return
    with ThreadPoolExecutor(max_workers=len(ends), thread_name_prefix="close-lane") as pool:
        list(pool.map(_close_quietly, ends))


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

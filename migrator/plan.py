"""Newest-first ordering, date range and quota budget (pure: values in, values out).

The copier lists every message of the mailbox as a `MessageRef`, then asks this
module which ones to send and in what order: newest first across the whole
mailbox, not folder by folder, so a mailbox stopped early (quota, time) holds
the most recent mail.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import FrozenInstanceError, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Dates outside this window are "absurd" (a clock reset to 1970, a year 2099 typo):
# ordering then falls back to the Date header.
_EARLIEST_SANE = datetime(1980, 1, 1, tzinfo=UTC)
_FUTURE_SLACK = timedelta(days=2)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


_REF_FIELDS = (
    "folder", "uidvalidity", "uid", "size", "internaldate", "date_header", "flags",
    "message_id", "received", "place",
)  # fmt: skip


class MessageRef:
    """One source message, as listed before copying (no body): a value, compared and
    hashed by its fields, and immutable.

    A mailbox of a million messages holds a million of these at once, so each is kept
    small (about 180 bytes with its values, against 265 as a plain slotted dataclass): a
    numeric UID kept as the int the listing read (`uid` gives its text), and the four
    fields most messages leave empty held together in one slot."""

    __slots__ = ("_more", "_uid", "flags", "folder", "internaldate", "size", "uidvalidity")

    folder: str  # source folder name, as the source adapter names it
    uidvalidity: int
    size: int  # the source's claim: for budgets and windows, never for recognition
    internaldate: datetime | None
    flags: tuple[str, ...]
    _uid: str | int
    # (date_header, message_id, received, place), or None when all four are None.
    _more: tuple[datetime | None, str | None, datetime | None, str | None] | None

    def __init__(
        self,
        folder: str,
        uidvalidity: int,
        uid: str | int,
        size: int,
        internaldate: datetime | None,
        date_header: datetime | None = None,
        flags: tuple[str, ...] = (),
        message_id: str | None = None,  # as the source lists it: only for telling folders apart
        received: datetime | None = None,  # the newest Received field's date, where read
        # The source folder (of the listing) whose place at the target its copy takes,
        # where that is not `folder`, which then only keys its checkpoint (Gmail: one key
        # per message, whichever label folder it goes to).
        place: str | None = None,
    ) -> None:
        more = (date_header, message_id, received, place)
        put = object.__setattr__
        put(self, "folder", folder)
        put(self, "uidvalidity", uidvalidity)
        # An int (an IMAP UID as listed) is kept as it is; text is kept as text.
        put(self, "_uid", uid if isinstance(uid, str) else int(uid))
        put(self, "size", size)
        put(self, "internaldate", internaldate)
        put(self, "flags", flags)
        put(self, "_more", None if more == (None, None, None, None) else more)

    @property
    def uid(self) -> str:
        """Opaque text: an IMAP UID, a POP3 checkpoint id, an Exchange ItemId, a file name."""
        uid = self._uid
        return uid if isinstance(uid, str) else str(uid)

    @property
    def date_header(self) -> datetime | None:
        return self._more[0] if self._more is not None else None

    @property
    def message_id(self) -> str | None:
        return self._more[1] if self._more is not None else None

    @property
    def received(self) -> datetime | None:
        return self._more[2] if self._more is not None else None

    @property
    def place(self) -> str | None:
        return self._more[3] if self._more is not None else None

    def _fields(self) -> tuple[object, ...]:
        return (
            self.folder, self.uidvalidity, self.uid, self.size, self.internaldate,
            self.flags, self._more,
        )  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageRef):
            return NotImplemented
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _REF_FIELDS)
        return f"MessageRef({fields})"

    def __reduce__(self) -> tuple[type[MessageRef], tuple[object, ...]]:
        """Copied and pickled through the constructor (the slots refuse setattr)."""
        return (MessageRef, tuple(getattr(self, name) for name in _REF_FIELDS))

    def __setattr__(self, name: str, value: object) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def replace(self, **changes: Any) -> MessageRef:
        """A copy with `changes` (field names as the constructor takes them), as
        dataclasses.replace gives."""
        unknown = set(changes) - set(_REF_FIELDS)
        if unknown:
            raise TypeError(f"MessageRef has no field {sorted(unknown)[0]!r}")
        values = {name: getattr(self, name) for name in _REF_FIELDS}
        values.update(changes)
        return MessageRef(**values)

    @property
    def placed(self) -> str:
        """The source folder whose place at the target its copy takes."""
        return self.place or self.folder

    @property
    def ident(self) -> tuple[str, int, str]:
        """(folder, UIDVALIDITY, UID): what a checkpoint records."""
        return (self.folder, self.uidvalidity, self.uid)

    def effective_date(self, now: datetime) -> datetime:
        """For ordering and date ranges: INTERNALDATE, or where it is missing or absurd
        the newest Received date, then the Date header."""
        for candidate in (self.internaldate, self.received, self.date_header):
            if candidate is not None and _is_sane(candidate, now):
                return candidate
        return self.internaldate or self.received or self.date_header or _EPOCH

    def append_date(self, now: datetime) -> datetime | None:
        """The arrival time its copy gets: the source's INTERNALDATE as it is; without
        one (POP3), the newest Received date, then the Date header, sane ones first."""
        if self.internaldate is not None:
            return self.internaldate
        for candidate in (self.received, self.date_header):
            if candidate is not None and _is_sane(candidate, now):
                return candidate
        return self.received or self.date_header


def is_sane(value: datetime, now: datetime) -> bool:
    """Whether a date could be a real arrival time: not before 1980, not days ahead."""
    return _is_sane(value, now)


def _is_sane(value: datetime, now: datetime) -> bool:
    return _EARLIEST_SANE <= value <= now + _FUTURE_SLACK


def newest_first(refs: Iterable[MessageRef], now: datetime) -> list[MessageRef]:
    """Whole-mailbox order: newest first; ties broken by folder then UID, newest UID first.

    Sorted one key at a time, the least significant first (each sort is stable, also in
    reverse), rather than by one tuple: a key tuple per message would be held for the whole
    sort, a hundred bytes a message; these keys are the refs' own strings, cached small
    ints and one float each."""
    ordered = sorted(refs, key=_uid_key, reverse=True)
    ordered.sort(key=_uid_length, reverse=True)
    ordered.sort(key=_folder_key, reverse=True)
    ordered.sort(key=lambda r: _timestamp(r.effective_date(now)), reverse=True)
    return ordered


def _uid_key(ref: MessageRef) -> str:
    return ref.uid


def _uid_length(ref: MessageRef) -> int:
    return len(ref.uid)


def _folder_key(ref: MessageRef) -> str:
    return ref.folder


def _timestamp(value: datetime) -> float:
    """A datetime's instant, naive ones read as UTC (as comparing them would need)."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def within_range(
    ref: MessageRef, now: datetime, since: datetime | None, until: datetime | None
) -> bool:
    """`since` is inclusive, `until` exclusive; no bounds means all mail."""
    when = ref.effective_date(now)
    if since is not None and when < since:
        return False
    return not (until is not None and when >= until)


def quota_budget(
    *,
    server_limit: int | None,
    server_usage: int,
    activation_limit: int | None,
) -> int | None:
    """Bytes that may still be sent: the smaller of the server's and the activation CSV's
    room, or None for no limit.  Both limits are on the whole target mailbox, so the
    usage already there counts against each."""
    rooms = [max(0, limit - server_usage) for limit in (server_limit, activation_limit) if limit]
    return min(rooms) if rooms else None


@dataclass(frozen=True)
class Plan:
    """What one pass over a mailbox will do."""

    to_copy: tuple[MessageRef, ...]  # in copy order
    already_done: tuple[MessageRef, ...]  # checkpointed, or recognised at the target
    out_of_range: int
    total_messages: int = field(init=False)
    total_bytes: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "total_messages", len(self.to_copy) + len(self.already_done))
        object.__setattr__(
            self,
            "total_bytes",
            sum(r.size for r in self.to_copy) + sum(r.size for r in self.already_done),
        )


def make_plan(
    refs: Sequence[MessageRef],
    *,
    now: datetime,
    since: datetime | None,
    until: datetime | None,
    done: Collection[tuple[str, int, str]],
) -> Plan:
    """Order the mailbox newest first and split it into what is done and what to copy.

    `done` holds (folder, uidvalidity, uid) of the messages known to be at the target:
    checkpointed, or recognised there by content (migrator.recognition)."""
    in_range = [r for r in refs if within_range(r, now, since, until)]
    ordered = newest_first(in_range, now)
    return Plan(
        to_copy=tuple(r for r in ordered if r.ident not in done),
        already_done=tuple(r for r in ordered if r.ident in done),
        out_of_range=len(refs) - len(in_range),
    )


@dataclass(frozen=True)
class BudgetSplit:
    fits: tuple[MessageRef, ...]
    left: tuple[MessageRef, ...]

    @property
    def left_bytes(self) -> int:
        return sum(r.size for r in self.left)


def take_within_budget(ordered: Sequence[MessageRef], budget: int | None) -> BudgetSplit:
    """The newest messages that fit, stopping at the first that does not.

    It stops rather than skipping to smaller, older messages, so the target holds
    exactly the newest mail: a gap in the middle of someone's mail is worse than
    an older cut-off.
    """
    if budget is None:
        return BudgetSplit(tuple(ordered), ())
    used = 0
    for index, ref in enumerate(ordered):
        if used + ref.size > budget:
            return BudgetSplit(tuple(ordered[:index]), tuple(ordered[index:]))
        used += ref.size
    return BudgetSplit(tuple(ordered), ())


def window_full(count: int, size: int, *, most: int, small_most: int = 0, small: int = 0) -> bool:
    """Whether a window (or batch) of `count` messages and `size` bytes takes no more
    messages: it holds `most`, unless they are small (less than `small` bytes in all),
    which then grow it up to `small_most` (none by default).  Byte limits are the
    caller's: a window checks the next message's size, a batch what it holds."""
    return count >= max(most, small_most) or (count >= most and size >= small)


def fetch_windows(
    refs: Sequence[MessageRef],
    max_count: int,
    max_bytes: int,
    *,
    start: int = 0,
    small_count: int = 0,
    small_bytes: int = 0,
) -> Iterator[Sequence[MessageRef]]:
    """Consecutive slices of `refs[start:]` (not copied whole) for one round trip each:
    at most `max_count` messages and `max_bytes` bytes, but always at least one message,
    however big; small messages grow a window up to `small_count` (`window_full`)."""
    while start < len(refs):
        end, size = start, 0
        while end < len(refs):
            count = end - start  # (window_full is never true below max_count: not asked)
            if count >= max_count and window_full(
                count, size, most=max_count, small_most=small_count, small=small_bytes
            ):
                break
            if end > start and size + refs[end].size > max_bytes:
                break
            size += refs[end].size
            end += 1
        yield refs[start:end]
        start = end


# A server counts the mail it holds its own way (KiB rounding, per-message overhead), a
# little apart from the sizes the source lists: this close to its limit, the order stays exact.
REORDER_MARGIN_PERCENT = 10
REORDER_MARGIN_MIN = 1024 * 1024


def reorderable_bytes(
    *, budget: int | None, server_limit: int | None, server_unlimited: bool
) -> int | None:
    """Bytes at the head of the copy order that certainly fit at the target, so that
    sending them in another order cannot change what a quota stop leaves there; None
    when that holds for every message.

    A server whose limit is unknown may refuse at any message: none.  A server that
    says it has no limit refuses none: the whole budget, which then comes from the
    activation CSV and which `take_within_budget` already enforces.  A server with a
    known limit: the budget less a margin for the server's own way of counting."""
    if server_limit is None:
        return budget if server_unlimited else 0
    budget = budget if budget is not None else server_limit
    margin = max(budget * REORDER_MARGIN_PERCENT // 100, REORDER_MARGIN_MIN)
    return max(0, budget - margin)


def send_order(
    refs: Sequence[MessageRef], room: int | None, max_count: int, max_bytes: int
) -> tuple[MessageRef, ...]:
    """The order to send `refs` (newest first) in: windows of `max_count` messages and
    `max_bytes` bytes (as `fetch_windows` cuts them), and within each window that ends
    inside `room` bytes, one folder's messages together, newest first, the folders in
    the order of their newest message.  Newest first interleaves folders, so a target
    that takes one folder per command (IMAP MULTIAPPEND, EWS CreateItem) would get one
    message per command; grouped, it gets a few commands per window.  From the first
    window that ends past `room` on, the order is exactly that of `refs`."""
    order: list[MessageRef] = []
    sent = 0
    for window in fetch_windows(refs, max_count, max_bytes):
        sent += sum(r.size for r in window)
        if room is not None and sent > room:
            order.extend(refs[len(order) :])
            break
        by_folder: dict[str, list[MessageRef]] = {}
        for ref in window:
            by_folder.setdefault(ref.placed, []).append(ref)
        for members in by_folder.values():
            order.extend(members)
    return tuple(order)


@dataclass(frozen=True)
class LaneSplit:
    """The send order cut for several connections: `lanes` go side by side, each on its
    own source and target connection, then `tail` goes on the first connection alone."""

    lanes: tuple[tuple[MessageRef, ...], ...]
    tail: tuple[MessageRef, ...] = ()


# A connection costs its own login, listing and TLS handshake: a lane is worth that only
# with this many windows of mail to carry, so a small mailbox keeps one connection.
LANE_MIN_WINDOWS = 3
# What a message costs a lane beside its bytes, in bytes: its share of the round trips,
# the checkpoint and the copier's CPU (about 0.5 ms a message, as long as 20 KB take).
LANE_MESSAGE_COST = 20_000


def lane_split(
    order: Sequence[MessageRef],
    room: int | None,
    lanes: int,
    max_count: int,
    max_bytes: int,
    min_windows: int = LANE_MIN_WINDOWS,
) -> LaneSplit:
    """Deal the windows of `order` (as `fetch_windows` cuts them) to `lanes` connections,
    each window in turn to the lane with the least work dealt so far (its bytes, and
    LANE_MESSAGE_COST for each message), so that together they still go roughly newest
    first and end together (windows in turn alone left one lane carrying the large
    attachments, 15% of the copy's time after the others ended); each lane keeps the order
    it was dealt.  Lanes run at their own pace, so only the head of `order` that certainly
    fits at the target (`room` bytes, see `reorderable_bytes`) is dealt: the rest is the
    tail, sent afterwards in exact order, so a quota stop still leaves exactly the newest
    mail.  Each lane gets at least `min_windows` windows: with too few, there is one lane,
    and it carries everything."""
    windows: list[tuple[Sequence[MessageRef], int]] = []
    head = 0
    size = 0
    for window in fetch_windows(order, max_count, max_bytes):
        window_size = sum(r.size for r in window)
        size += window_size
        if room is not None and size > room:
            break
        windows.append((window, window_size + len(window) * LANE_MESSAGE_COST))
        head += len(window)
    count = min(lanes, len(windows) // max(1, min_windows))
    if count < 2:
        return LaneSplit(lanes=(tuple(order),))
    dealt: list[list[MessageRef]] = [[] for _ in range(count)]
    work = [0] * count
    for window, cost in windows:
        lane = min(range(count), key=work.__getitem__)  # the first of the least loaded
        dealt[lane].extend(window)
        work[lane] += cost
    return LaneSplit(lanes=tuple(tuple(lane) for lane in dealt), tail=tuple(order[head:]))

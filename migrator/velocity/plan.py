"""Waves, workers and duration from an inventory and a measured throughput (pure).

Units: GB = 10**9 bytes (as the pilot report's GB/hour), hours, bytes.

The arithmetic, given

    T  = throughput, GB/hour that one session moves (the pilot's figure)
    W  = window, hours one wave may take
    P  = sessions per worker (default 4)

1. One session moves B = floor(T * W * 10**9) bytes in a window.
2. Concurrent sessions S:
   - `sessions` given: S = sessions, and workers = ceil(S / P) (rounded up: a worker
     runs whole sessions); `workers` given as well must be at least that.
   - only `workers` given: S = workers * P.
   - neither: workers is solved for, as the smallest count whose plan has at most
     `waves` waves (default 1), found by bisection between
     ceil(ceil(total / (waves * B)) / P) and ceil(ceil(total / B) / P) (where one
     wave holds everything); then S = workers * P.
3. A wave holds at most C = S * B bytes.
4. Packing units: the mailboxes of one Group (case-insensitive) form one unit, never
   split across waves; a mailbox without a Group is a unit of its own.  Units go
   largest first (ties by identity) into the first wave with room (first-fit
   decreasing); a unit with no room anywhere opens a new wave.  A unit larger than C
   gets a wave of its own, which nothing else joins, and a warning.
5. A wave takes max(bytes / (S * T), largest mailbox / T) hours: its sessions share
   the bytes, but one mailbox moves through one session.  The total duration is the
   sum over waves.  A wave longer than W, and a mailbox larger than B, are warned of.
6. Warnings also for a mailbox larger than its QuotaBytes and for a folder holding
   more items than the target allows (ITEM_THRESHOLDS, by folder name,
   case-insensitive; a count equal to the threshold is allowed).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

GB = 10**9

# Exchange Online's recommended item limits per folder (beyond them, clients slow down).
ITEM_THRESHOLDS: Mapping[str, int] = {
    "Inbox": 20_000,
    "Sent Items": 20_000,
    "Deleted Items": 20_000,
    "Calendar": 5_000,
    "Contacts": 5_000,
}


@dataclass(frozen=True)
class InventoryRow:
    """One mailbox of an inventory."""

    identity: str
    size_bytes: int
    items: Mapping[str, int] = field(default_factory=dict)  # target folder name -> item count
    group: str = ""  # people who work together move together
    quota_bytes: int | None = None
    line: int = 0  # in the inventory CSV, for messages


@dataclass(frozen=True)
class PlanOptions:
    throughput_gb_per_hour: float  # per session
    window_hours: float
    sessions: int | None = None
    sessions_per_worker: int = 4
    workers: int | None = None
    waves: int = 1  # the most waves wanted, when workers are solved for


class WarningKind(str, enum.Enum):  # noqa: UP042 (the project's str + Enum)
    QUOTA = "quota"  # mailbox larger than its quota
    ITEMS = "items"  # folder over the target's item threshold
    OVERSIZE = "oversize"  # a group or mailbox larger than a wave: a wave of its own
    LONG_MAILBOX = "long_mailbox"  # one session cannot move it within the window
    LONG_WAVE = "long_wave"  # the wave takes longer than the window


@dataclass(frozen=True)
class PlanWarning:
    kind: WarningKind
    subject: str  # the mailbox identity or group name
    message: str


@dataclass(frozen=True)
class Wave:
    number: int
    identities: tuple[str, ...]  # largest first
    bytes: int
    hours: float
    oversize: bool = False  # holds one unit larger than a wave


@dataclass(frozen=True)
class WavePlan:
    waves: tuple[Wave, ...]
    workers: int
    sessions_per_worker: int
    sessions: int
    session_window_bytes: int  # B
    wave_capacity_bytes: int  # C
    total_bytes: int
    total_hours: float
    warnings: tuple[PlanWarning, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "waves": [
                {
                    "number": w.number,
                    "mailboxes": list(w.identities),
                    "bytes": w.bytes,
                    "hours": w.hours,
                    "oversize": w.oversize,
                }
                for w in self.waves
            ],
            "wave_count": len(self.waves),
            "workers": self.workers,
            "sessions_per_worker": self.sessions_per_worker,
            "sessions": self.sessions,
            "session_window_bytes": self.session_window_bytes,
            "wave_capacity_bytes": self.wave_capacity_bytes,
            "total_bytes": self.total_bytes,
            "total_hours": self.total_hours,
            "warnings": [
                {"kind": w.kind.value, "subject": w.subject, "message": w.message}
                for w in self.warnings
            ],
        }


@dataclass(frozen=True)
class _Unit:
    name: str  # group name, or the identity of a mailbox without a group
    is_group: bool
    rows: tuple[InventoryRow, ...]  # largest first

    @property
    def size(self) -> int:
        return sum(r.size_bytes for r in self.rows)


def plan_waves(rows: Sequence[InventoryRow], options: PlanOptions) -> WavePlan:
    """The plan of the module docstring.  Raises ValueError for options that cannot
    make a plan (non-positive throughput, window or counts; too few workers)."""
    _check(options)
    per = options.sessions_per_worker
    session_bytes = math.floor(options.throughput_gb_per_hour * options.window_hours * GB)
    if session_bytes <= 0:
        raise ValueError("throughput x window moves less than one byte per session")
    units = _units(rows)
    total = sum(r.size_bytes for r in rows)

    workers, sessions = _size(options, units, total, session_bytes)
    capacity = sessions * session_bytes
    packed = _pack(units, capacity)
    warnings: list[PlanWarning] = []
    for row in rows:
        warnings.extend(_row_warnings(row, session_bytes, options.window_hours))
    waves: list[Wave] = []
    session_rate = options.throughput_gb_per_hour * GB  # bytes/hour of one session
    for number, (members, oversize) in enumerate(packed, start=1):
        wave = _wave(number, members, oversize, sessions, session_rate)
        waves.append(wave)
        warnings.extend(_wave_warnings(wave, members, capacity, options.window_hours))
    return WavePlan(
        waves=tuple(waves),
        workers=workers,
        sessions_per_worker=per,
        sessions=sessions,
        session_window_bytes=session_bytes,
        wave_capacity_bytes=capacity,
        total_bytes=total,
        total_hours=sum(w.hours for w in waves),
        warnings=tuple(warnings),
    )


def _size(
    options: PlanOptions, units: Sequence[_Unit], total: int, session_bytes: int
) -> tuple[int, int]:
    """(workers, sessions): as given, or the fewest workers that fit the waves asked for."""
    per = options.sessions_per_worker
    if options.sessions is not None:
        sessions = options.sessions
        workers = math.ceil(sessions / per)
        if options.workers is not None:
            if options.workers < workers:
                raise ValueError(
                    f"{sessions} sessions need {workers} workers at {per} sessions per worker, "
                    f"not {options.workers}"
                )
            workers = options.workers
    elif options.workers is not None:
        workers = options.workers
        sessions = workers * per
    else:
        workers = _solve_workers(
            total,
            session_bytes,
            per,
            options.waves,
            lambda w: len(_pack(units, w * per * session_bytes)),
        )
        sessions = workers * per
    return workers, sessions


def _wave(
    number: int, members: Sequence[_Unit], oversize: bool, sessions: int, session_rate: float
) -> Wave:
    wave_rows = sorted(
        (r for u in members for r in u.rows), key=lambda r: (-r.size_bytes, r.identity.lower())
    )
    size = sum(r.size_bytes for r in wave_rows)
    largest = wave_rows[0].size_bytes if wave_rows else 0
    hours = max(size / (sessions * session_rate), largest / session_rate)
    return Wave(number, tuple(r.identity for r in wave_rows), size, hours, oversize)


def _wave_warnings(
    wave: Wave, members: Sequence[_Unit], capacity: int, window_hours: float
) -> list[PlanWarning]:
    warnings = []
    number = wave.number
    if wave.oversize:
        unit = members[0]
        what = f"group {unit.name}" if unit.is_group else f"mailbox {unit.name}"
        warnings.append(
            PlanWarning(
                WarningKind.OVERSIZE,
                unit.name,
                f"{what} ({_gb(unit.size)}) is larger than a wave ({_gb(capacity)}): "
                f"it gets wave {number} of its own",
            )
        )
    if wave.hours > window_hours:
        warnings.append(
            PlanWarning(
                WarningKind.LONG_WAVE,
                f"wave {number}",
                f"wave {number} takes {wave.hours:.1f} hours, longer than the "
                f"{window_hours:g}-hour window",
            )
        )
    return warnings


def _check(options: PlanOptions) -> None:
    if not options.throughput_gb_per_hour > 0:
        raise ValueError("the throughput must be more than 0 GB/hour")
    if not options.window_hours > 0:
        raise ValueError("the window must be more than 0 hours")
    for name in ("sessions", "sessions_per_worker", "workers", "waves"):
        value = getattr(options, name)
        if value is not None and value < 1:
            raise ValueError(f"{name.replace('_', ' ')} must be at least 1")


def _units(rows: Sequence[InventoryRow]) -> list[_Unit]:
    groups: dict[str, list[InventoryRow]] = {}
    names: dict[str, str] = {}
    units: list[_Unit] = []
    for row in rows:
        if row.group:
            key = row.group.casefold()
            names.setdefault(key, row.group)
            groups.setdefault(key, []).append(row)
        else:
            units.append(_Unit(row.identity, False, (row,)))
    for key, members in groups.items():
        ordered = sorted(members, key=lambda r: (-r.size_bytes, r.identity.lower()))
        units.append(_Unit(names[key], True, tuple(ordered)))
    units.sort(key=lambda u: (-u.size, u.name.lower()))
    return units


def _pack(units: Sequence[_Unit], capacity: int) -> list[tuple[list[_Unit], bool]]:
    """First-fit decreasing; `units` come largest first.  (members, oversize) per wave."""
    waves: list[tuple[list[_Unit], bool]] = []
    used: list[int] = []
    for unit in units:
        size = unit.size
        if size > capacity:
            waves.append(([unit], True))
            used.append(capacity)  # closed: nothing joins an oversize wave
            continue
        for index, (members, oversize) in enumerate(waves):
            if not oversize and used[index] + size <= capacity:
                members.append(unit)
                used[index] += size
                break
        else:
            waves.append(([unit], False))
            used.append(size)
    return waves


def _solve_workers(
    total: int, session_bytes: int, per: int, target: int, wave_count: Callable[[int], int]
) -> int:
    lo = max(1, math.ceil(math.ceil(total / (target * session_bytes)) / per))
    hi = max(lo, math.ceil(math.ceil(total / session_bytes) / per))  # one wave holds all
    while lo < hi:
        mid = (lo + hi) // 2
        if wave_count(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def _row_warnings(row: InventoryRow, session_bytes: int, window: float) -> list[PlanWarning]:
    warnings = []
    if row.quota_bytes is not None and row.size_bytes > row.quota_bytes:
        warnings.append(
            PlanWarning(
                WarningKind.QUOTA,
                row.identity,
                f"{row.identity} holds {_gb(row.size_bytes)}, more than its quota "
                f"of {_gb(row.quota_bytes)}",
            )
        )
    limits = {name.casefold(): (name, limit) for name, limit in ITEM_THRESHOLDS.items()}
    for folder, count in row.items.items():
        found = limits.get(folder.casefold())
        if found is not None and count > found[1]:
            warnings.append(
                PlanWarning(
                    WarningKind.ITEMS,
                    row.identity,
                    f"{row.identity}: {folder} holds {count:,} items, over the target's "
                    f"{found[1]:,} for {found[0]}",
                )
            )
    if row.size_bytes > session_bytes:
        warnings.append(
            PlanWarning(
                WarningKind.LONG_MAILBOX,
                row.identity,
                f"{row.identity} ({_gb(row.size_bytes)}) is more than one session moves "
                f"in the {window:g}-hour window ({_gb(session_bytes)})",
            )
        )
    return warnings


def _gb(size: int) -> str:
    return f"{size / GB:.2f} GB"

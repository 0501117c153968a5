"""The figures of a pilot run: per mailbox, per point and the concurrency curve.

Everything here is computed from what the progress Redis keeps (StateStore: the
mailbox counters with their started/updated times, and throughput per minute) plus
the copier's wait timings (velocity.store).  Units: MB = 10**6 bytes, GB = 10**9
bytes, as `migrator status` shows them.

- A mailbox's wall time is `updated - started` (started: when it began running;
  updated: its last recorded change, the result).  A point's wall time runs from the
  first mailbox's start to the last mailbox's last update.
- A point's messages and bytes are the sums of its throughput minutes: every message
  the copier sent, and nothing it found already there.  A mailbox's messages are its
  copied_messages; its bytes are `copied_bytes` if the copier recorded them, else
  done_bytes when everything done was copied in this pass, else done_bytes scaled by
  copied/done messages (flagged as estimated).
- Rates: messages/s and MB/s over the wall time; GB/hour = bytes / 10**9 / wall hours.
- Throughput over time: in buckets of whole minutes that fit the run (at most
  MAX_BUCKETS), each bucket's bytes divided by the seconds the point ran in it; a bucket
  the point ran less than half of (its first or last) is folded into its neighbour, so
  a short run draws no partial-minute spikes (a run under a minute and a half is one).
- The curve: per concurrency, the mean (and min, max) GB/hour of its repeats; the
  knee is the smallest concurrency whose mean reaches KNEE_SHARE of the best mean,
  where a larger concurrency was tried too and bought less than (1 - KNEE_SHARE) more
  throughput.  When the best is at the largest concurrency tried, there is no knee:
  throughput was still growing (`still_growing`).
- Per session: a point's GB/hour divided by its concurrency, what `velocity plan`
  takes as its throughput.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrator.state import MailboxStatus, StateStore
from migrator.velocity.store import Extra, Timings, read_extras

KNEE_SHARE = 0.9
MAX_BUCKETS = 60


@dataclass(frozen=True)
class Figures:
    """Messages and bytes moved in a wall time, and where the time went."""

    messages: int
    bytes: int
    wall_seconds: float
    timings: Timings = field(default_factory=Timings)

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / 1e6 / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def gb_per_hour(self) -> float:
        return self.bytes / 1e9 / (self.wall_seconds / 3600) if self.wall_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "bytes": self.bytes,
            "wall_seconds": self.wall_seconds,
            "messages_per_second": self.messages_per_second,
            "mb_per_second": self.mb_per_second,
            "gb_per_hour": self.gb_per_hour,
            "source_seconds": self.timings.source_seconds,
            "target_seconds": self.timings.target_seconds,
            "throttle_seconds": self.timings.throttle_seconds,
        }


@dataclass(frozen=True)
class MailboxFigures:
    job_id: str
    source_identity: str
    target_identity: str
    state: str
    figures: Figures
    bytes_estimated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "source_identity": self.source_identity,
            "target_identity": self.target_identity,
            "state": self.state,
            **self.figures.as_dict(),
            "bytes_estimated": self.bytes_estimated,
        }


@dataclass(frozen=True)
class Sample:
    """One minute of throughput."""

    minute: int  # epoch seconds of the minute's start
    offset_seconds: float  # when the minute starts, from the point's start (may be < 0)
    messages: int
    bytes: int
    seconds: float  # how much of the minute the point was running

    @property
    def gb_per_hour(self) -> float:
        return self.bytes / 1e9 / (self.seconds / 3600)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "gb_per_hour": self.gb_per_hour}


@dataclass(frozen=True)
class PointReport:
    batch_id: str
    concurrency: int
    repeat: int  # 1-based
    started: float | None
    finished: float | None
    total: Figures
    mailboxes: tuple[MailboxFigures, ...]
    samples: tuple[Sample, ...]

    def slowest(self, count: int) -> list[MailboxFigures]:
        """Mailboxes that ran, lowest MB/s first (the longest first among equals)."""
        ran = [m for m in self.mailboxes if m.figures.wall_seconds > 0]
        ran.sort(key=lambda m: (m.figures.mb_per_second, -m.figures.wall_seconds))
        return ran[:count]

    def as_dict(self, slowest: int) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "concurrency": self.concurrency,
            "repeat": self.repeat,
            "started": self.started,
            "finished": self.finished,
            "total": self.total.as_dict(),
            "slowest": [m.job_id for m in self.slowest(slowest)],
            "mailboxes": [m.as_dict() for m in self.mailboxes],
            "throughput": [s.as_dict() for s in self.samples],
        }


@dataclass(frozen=True)
class CurvePoint:
    concurrency: int
    runs: int
    gb_per_hour: float  # mean of the runs
    gb_per_hour_min: float
    gb_per_hour_max: float
    messages_per_second: float  # mean of the runs


@dataclass(frozen=True)
class VelocityReport:
    run_id: str
    meta: Mapping[str, str]
    points: tuple[PointReport, ...]
    slowest_count: int = 5

    @property
    def curve(self) -> list[CurvePoint]:
        return concurrency_curve(self.points)

    @property
    def knee(self) -> int | None:
        return knee(self.curve)

    @property
    def still_growing(self) -> bool:
        """The best mean throughput is at the largest concurrency tried (of several)."""
        curve = self.curve
        return len(curve) > 1 and max(curve, key=lambda c: c.gb_per_hour) is curve[-1]

    @property
    def per_session_gb_per_hour(self) -> float | None:
        """What `velocity plan --throughput` takes: at the knee, or at the best point
        where there is none, its GB/hour per concurrent session."""
        curve = self.curve
        if not curve:
            return None
        at = self.knee
        point = next((c for c in curve if c.concurrency == at), None) or max(
            curve, key=lambda c: c.gb_per_hour
        )
        return point.gb_per_hour / point.concurrency

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "meta": dict(self.meta),
            "points": [p.as_dict(self.slowest_count) for p in self.points],
            "curve": [
                {**c.__dict__, "gb_per_hour_per_session": c.gb_per_hour / c.concurrency}
                for c in self.curve
            ],
            "knee_concurrency": self.knee,
            "still_growing": self.still_growing,
            "gb_per_hour_per_session": self.per_session_gb_per_hour,
        }


def build_point(
    batch_id: str,
    concurrency: int,
    repeat: int,
    rows: Sequence[MailboxStatus],
    throughput: Sequence[tuple[int, int, int]],
    extras: Mapping[str, Extra],
) -> PointReport:
    """The figures of one point from its Redis values (pure)."""
    mailboxes = tuple(_mailbox(row, extras.get(row.job_id)) for row in rows)
    starts = [r.started for r in rows if r.started is not None]
    ends = [r.updated for r in rows if r.started is not None and r.updated is not None]
    started = min(starts) if starts else None
    finished = max(ends) if ends else None
    wall = max(0.0, finished - started) if started is not None and finished is not None else 0.0
    timings = Timings()
    for mailbox in mailboxes:
        timings = timings + mailbox.figures.timings
    total = Figures(
        messages=sum(m for _, m, _ in throughput),
        bytes=sum(b for _, _, b in throughput),
        wall_seconds=wall,
        timings=timings,
    )
    samples = _samples(throughput, started, finished)
    return PointReport(batch_id, concurrency, repeat, started, finished, total, mailboxes, samples)


def point_from_store(
    store: StateStore, batch_id: str, concurrency: int, repeat: int
) -> PointReport:
    rows = store.mailboxes(batch_id)
    extras = read_extras(store, batch_id, [r.job_id for r in rows])
    return build_point(batch_id, concurrency, repeat, rows, store.throughput(batch_id), extras)


def concurrency_curve(points: Sequence[PointReport]) -> list[CurvePoint]:
    by_concurrency: dict[int, list[PointReport]] = {}
    for point in points:
        by_concurrency.setdefault(point.concurrency, []).append(point)
    curve = []
    for concurrency, runs in sorted(by_concurrency.items()):
        rates = [p.total.gb_per_hour for p in runs]
        curve.append(
            CurvePoint(
                concurrency=concurrency,
                runs=len(runs),
                gb_per_hour=statistics.fmean(rates),
                gb_per_hour_min=min(rates),
                gb_per_hour_max=max(rates),
                messages_per_second=statistics.fmean(p.total.messages_per_second for p in runs),
            )
        )
    return curve


def knee(curve: Sequence[CurvePoint]) -> int | None:
    """The smallest concurrency reaching KNEE_SHARE of the best mean GB/hour, where a
    larger one was tried as well; None when it is the largest tried (still growing, or a
    single point: nothing says that more sessions would not buy more)."""
    if not curve:
        return None
    best = max(c.gb_per_hour for c in curve)
    found = next(c.concurrency for c in curve if c.gb_per_hour >= KNEE_SHARE * best)
    return found if found < curve[-1].concurrency else None


def _mailbox(row: MailboxStatus, extra: Extra | None) -> MailboxFigures:
    estimated = False
    if extra is not None and extra.copied_bytes is not None:
        size = extra.copied_bytes
    elif row.copied_messages >= row.done_messages:
        size = row.done_bytes
    else:
        size = round(row.done_bytes * row.copied_messages / row.done_messages)
        estimated = True
    wall = 0.0
    if row.started is not None and row.updated is not None:
        wall = max(0.0, row.updated - row.started)
    return MailboxFigures(
        job_id=row.job_id,
        source_identity=row.source_identity,
        target_identity=row.target_identity,
        state=row.state.value,
        figures=Figures(
            row.copied_messages, size, wall, extra.timings if extra is not None else Timings()
        ),
        bytes_estimated=estimated,
    )


def _samples(
    throughput: Sequence[tuple[int, int, int]], started: float | None, finished: float | None
) -> tuple[Sample, ...]:
    """Buckets of whole minutes, as many as fit MAX_BUCKETS; partial edges folded in."""
    if not throughput:
        return ()
    first = min(m for m, _, _ in throughput)
    last = max(m for m, _, _ in throughput)
    span = (finished - started) if started is not None and finished is not None else 0.0
    width = 60 * max(1, math.ceil(max(span, last + 60 - first) / 60 / MAX_BUCKETS))
    buckets: dict[int, list[int]] = {}
    for minute, messages, size in throughput:
        slot = buckets.setdefault(first + (minute - first) // width * width, [0, 0])
        slot[0] += messages
        slot[1] += size
    samples = [
        _sample(start, width, n, b, started, finished) for start, (n, b) in sorted(buckets.items())
    ]
    # A bucket the point ran in for less than half its width is folded into its neighbour.
    while len(samples) > 1 and samples[0].seconds < width / 2:
        samples[:2] = [_fold(samples[0], samples[1])]
    while len(samples) > 1 and samples[-1].seconds < width / 2:
        samples[-2:] = [_fold(samples[-2], samples[-1])]
    return tuple(samples)


def _sample(
    start: int,
    width: int,
    messages: int,
    size: int,
    started: float | None,
    finished: float | None,
) -> Sample:
    lo = max(float(start), started) if started is not None else float(start)
    hi = min(start + float(width), finished) if finished is not None else start + float(width)
    # At least a second: a copy stamped on the minute's edge must not divide by zero.
    seconds = max(1.0, hi - lo)
    offset = start - started if started is not None else 0.0
    return Sample(start, offset, messages, size, seconds)


def _fold(a: Sample, b: Sample) -> Sample:
    return Sample(a.minute, a.offset_seconds, a.messages + b.messages, a.bytes + b.bytes,
                  a.seconds + b.seconds)  # fmt: skip

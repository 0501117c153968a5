"""`migrator velocity run`: run a pilot batch once per measurement point, then report.

A point is (concurrency, repeat): the pilot copied by an in-process pool of
`concurrency` mailboxes at a time (what `migrator run --workers N` does without a
Redis URL), into a batch of its own ({batch id}-c{concurrency}-r{repeat}) so its
figures stay apart.  With more than one point, every point must copy the whole
pilot again, so before each one the targets are emptied and the checkpoints
dropped (velocity.reset) -- which the operator must allow explicitly.

Points always run on this machine, even with MIGRATOR_REDIS_URL set (then that
Redis keeps the progress): the pool size is the one thing a pilot varies, and
Celery workers elsewhere would not vary with it.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from migrator.batchprep import prepare, save_manifest, secret_box
from migrator.errors import ConfigError
from migrator.localredis import PrivateRedis, shared_url, state_dir
from migrator.localrun import run_in_process
from migrator.state import StateStore
from migrator.velocity.page import ReportFiles, write_report
from migrator.velocity.report import PointReport, VelocityReport, point_from_store
from migrator.velocity.reset import check_resettable, pilot_targets, reset_targets

EMPTY_TARGETS_FLAG = "--i-understand-targets-are-emptied"


@dataclass(frozen=True)
class Point:
    concurrency: int
    repeat: int  # 1-based


def measurement_points(concurrency: Sequence[int], repeat: int) -> list[Point]:
    """Each concurrency `repeat` times, in the order given."""
    return [Point(c, r) for c in concurrency for r in range(1, repeat + 1)]


@dataclass(frozen=True)
class VelocityOutcome:
    report: VelocityReport
    files: ReportFiles
    all_done: bool


def run_velocity(
    args: argparse.Namespace, *, say: Callable[[str], None] = lambda _text: None
) -> VelocityOutcome:
    """Prepare the pilot as `migrator run` does, run every point, write the report.

    Raises ConfigError before anything runs when more than one point is asked for
    without `empty_targets`, or when a target is also its source mailbox.
    """
    concurrency = list(args.concurrency or [args.workers])
    points = measurement_points(concurrency, args.repeat)
    if len(points) > 1 and not args.empty_targets:
        raise ConfigError(
            f"{len(points)} measurement points copy the pilot {len(points)} times: each one "
            f"empties the pilot's target mailboxes first. Give {EMPTY_TARGETS_FLAG} "
            "if they are throwaway."
        )
    box = secret_box(create=True)
    batch_id, meta, jobs = prepare(args, box)
    targets = pilot_targets(jobs, box)
    if args.empty_targets:
        check_resettable(targets)
    meta = {
        **meta,
        "velocity_run": batch_id,
        "concurrency": ",".join(map(str, concurrency)),
        "repeat": str(args.repeat),
    }
    reports: list[PointReport] = []
    all_done = True
    with contextlib.ExitStack() as stack:
        url = shared_url()  # checked and pinged before anything is written
        private = None if url else stack.enter_context(PrivateRedis(state_dir()))
        store = StateStore.from_url(private.url if private is not None else str(url))
        for point in points:
            point_id = f"{batch_id}-c{point.concurrency}-r{point.repeat}"
            if args.empty_targets:
                deleted = reset_targets(store, targets)
                say(f"point {point_id}: emptied the targets ({deleted} messages deleted)")
            point_meta = {**meta, "point_concurrency": str(point.concurrency)}
            store.create_batch(point_id, point_meta, jobs)
            save_manifest(point_id, meta, jobs)
            say(f"point {point_id}: {len(jobs)} mailboxes, {point.concurrency} at a time")
            rows = run_in_process(store, point_id, [j.job_id for j in jobs], box, point.concurrency)
            all_done = all_done and all(r.state.copied for r in rows)
            measured = point_from_store(store, point_id, point.concurrency, point.repeat)
            reports.append(measured)
            total = measured.total
            say(
                f"point {point_id}: {total.messages} messages, {total.bytes / 1e6:.1f} MB "
                f"in {total.wall_seconds:.1f} s = {total.gb_per_hour:.3f} GB/hour"
            )
        if private is not None:
            store.flush_to_disk()
    report = VelocityReport(batch_id, meta, tuple(reports), slowest_count=args.slowest)
    directory = args.report_dir or Path(f"velocity-{batch_id}")
    return VelocityOutcome(report, write_report(report, Path(directory)), all_done)

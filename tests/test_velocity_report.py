"""The velocity report: figures from progress values, the curve and its knee, the wait
timings read from Redis, and the files (JSON, self-contained HTML, PNG)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from migrator.plan import MessageRef
from migrator.report import MailboxState
from migrator.state import MailboxStatus, NewJob, StateStore
from migrator.velocity.page import render_html, write_report
from migrator.velocity.report import (
    CurvePoint,
    Figures,
    PointReport,
    VelocityReport,
    build_point,
    knee,
    point_from_store,
)
from migrator.velocity.store import Extra, Timings, read_extras

T0 = 1_700_000_000.0
MINUTE = int(T0 // 60 * 60)


def status(
    job_id: str,
    *,
    started: float | None,
    updated: float | None,
    copied: int,
    done: int,
    done_bytes: int,
    state: MailboxState = MailboxState.DONE,
) -> MailboxStatus:
    values: dict[str, Any] = dict(
        batch_id="b",
        job_id=job_id,
        line=int(job_id),
        source_identity=f"s{job_id}@example.test",
        target_identity=f"t{job_id}@example.test",
        state=state,
        total_messages=done,
        total_bytes=done_bytes,
        done_messages=done,
        done_bytes=done_bytes,
        copied_messages=copied,
        left_messages=0,
        left_bytes=0,
        skipped_messages=0,
        current_folder="",
        started=started,
        updated=updated,
        last_error="",
    )
    # Fields other features add to MailboxStatus (counters, texts) start empty.
    for field in dataclasses.fields(MailboxStatus):
        if field.name not in values:
            values[field.name] = {"int": 0, "str": ""}.get(str(field.type))
    return MailboxStatus(**values)


def _point(concurrency: int = 1, repeat: int = 1, gb: float = 1.0) -> PointReport:
    """A point that moved `gb` GB in one hour."""
    return PointReport(
        f"b-c{concurrency}-r{repeat}",
        concurrency,
        repeat,
        T0,
        T0 + 3600,
        Figures(100, int(gb * 1e9), 3600.0),
        (),
        (),
    )


@pytest.mark.parametrize(
    ("figures", "per_second", "mb_s", "gb_h"),
    [
        (Figures(100, 50_000_000, 10.0), 10.0, 5.0, 18.0),
        (Figures(3600, 1_000_000_000, 3600.0), 1.0, 1000 / 3600, 1.0),
        (Figures(0, 0, 60.0), 0.0, 0.0, 0.0),
        (Figures(5, 5_000, 0.0), 0.0, 0.0, 0.0),  # never ran: no rate, no division by zero
    ],
)
def test_rates_are_over_wall_time_in_decimal_units(
    figures: Figures, per_second: float, mb_s: float, gb_h: float
) -> None:
    assert figures.messages_per_second == pytest.approx(per_second)
    assert figures.mb_per_second == pytest.approx(mb_s)
    assert figures.gb_per_hour == pytest.approx(gb_h)


def test_point_totals_come_from_throughput_and_wall_from_first_start_to_last_update() -> None:
    rows = [
        status("1", started=T0, updated=T0 + 30, copied=10, done=10, done_bytes=10_000),
        status("2", started=T0 + 5, updated=T0 + 95, copied=4, done=8, done_bytes=8_000),
        status("3", started=None, updated=T0, copied=0, done=0, done_bytes=0),
    ]
    throughput = [(MINUTE, 9, 9_000), (MINUTE + 60, 5, 5_000)]
    extras = {
        "1": Extra(Timings(1.0, 2.0, 0.5), None),
        "2": Extra(Timings(3.0, 0.0, 4.0), None),
    }
    point = build_point("b", 2, 1, rows, throughput, extras)

    assert (point.total.messages, point.total.bytes) == (14, 14_000)
    assert point.total.wall_seconds == pytest.approx(95.0)
    assert point.total.timings == Timings(4.0, 2.0, 4.5)
    by_id = {m.job_id: m for m in point.mailboxes}
    assert by_id["1"].figures.bytes == 10_000 and not by_id["1"].bytes_estimated
    assert by_id["1"].figures.wall_seconds == pytest.approx(30.0)
    # Half its done messages were there already: the bytes are an estimate, and say so.
    assert by_id["2"].figures.bytes == 4_000 and by_id["2"].bytes_estimated
    assert by_id["3"].figures.wall_seconds == 0.0
    assert by_id["3"].figures.timings == Timings()
    assert [m.job_id for m in point.slowest(5)] == ["2", "1"]
    assert [m.job_id for m in point.slowest(1)] == ["2"]


def test_recorded_copied_bytes_win_over_the_estimate() -> None:
    rows = [status("1", started=T0, updated=T0 + 1, copied=1, done=2, done_bytes=300)]
    point = build_point("b", 1, 1, rows, [], {"1": Extra(Timings(), 123)})
    assert point.mailboxes[0].figures.bytes == 123
    assert not point.mailboxes[0].bytes_estimated


def test_a_short_runs_partial_minutes_fold_into_one_bucket_with_no_spike() -> None:
    start = MINUTE + 45.0  # the point ran the last 15 s of its first minute, 30 s of its next
    rows = [status("1", started=start, updated=MINUTE + 60 + 30, copied=2, done=2, done_bytes=2)]
    point = build_point("b", 1, 1, rows, [(MINUTE, 1, 15_000), (MINUTE + 60, 1, 30_000)], {})
    assert [s.seconds for s in point.samples] == [45.0]
    assert [s.gb_per_hour for s in point.samples] == pytest.approx([0.0036])
    assert [s.offset_seconds for s in point.samples] == [-45.0]


def test_partial_edge_minutes_of_a_longer_run_fold_into_their_neighbours() -> None:
    start, end = MINUTE + 50.0, MINUTE + 4 * 60 + 10  # 10 s, three whole minutes, 10 s
    rows = [status("1", started=start, updated=end, copied=5, done=5, done_bytes=5)]
    minutes = [(MINUTE + 60 * i, 1, 6_000 if i in (0, 4) else 36_000) for i in range(5)]
    point = build_point("b", 1, 1, rows, minutes, {})
    assert [s.seconds for s in point.samples] == [70.0, 60.0, 70.0]
    assert [s.gb_per_hour for s in point.samples] == pytest.approx([0.00216] * 3)


def test_a_long_run_is_drawn_in_buckets_of_several_minutes() -> None:
    rows = [status("1", started=MINUTE, updated=MINUTE + 6 * 3600, copied=1, done=1, done_bytes=1)]
    minutes = [(MINUTE + 60 * i, 1, 1_000) for i in range(6 * 60)]
    point = build_point("b", 1, 1, rows, minutes, {})
    assert len(point.samples) == 60 and {s.seconds for s in point.samples} == {360.0}
    assert sum(s.bytes for s in point.samples) == 360_000


@pytest.mark.parametrize(
    ("rates", "expected"),
    [
        ({1: 1.0}, None),  # one point: nothing says more would not buy more
        ({1: 1.0, 2: 1.8, 4: 2.0, 8: 2.05}, 4),  # 2.0 >= 0.9 * 2.05; 1.8 is not
        ({1: 1.0, 2: 2.0, 4: 4.0, 8: 8.0}, None),  # still growing at the largest tried
        ({1: 1.0, 2: 2.0, 4: 4.0, 8: 7.5}, None),  # 8 is the knee, and the largest tried
        ({1: 3.0, 2: 2.0, 4: 1.0}, 1),  # more sessions only hurt
        ({}, None),
    ],
)
def test_knee_is_the_smallest_concurrency_near_the_best(
    rates: dict[int, float], expected: int | None
) -> None:
    curve = [CurvePoint(c, 1, r, r, r, 0.0) for c, r in sorted(rates.items())]
    assert knee(curve) == expected


def test_curve_averages_repeats_per_concurrency() -> None:
    report = VelocityReport(
        "run",
        {},
        (_point(1, 1, 1.0), _point(1, 2, 2.0), _point(2, 1, 4.0), _point(2, 2, 4.0)),
    )
    curve = report.curve
    assert [(c.concurrency, c.runs) for c in curve] == [(1, 2), (2, 2)]
    assert [c.gb_per_hour for c in curve] == pytest.approx([1.5, 4.0])
    assert (curve[0].gb_per_hour_min, curve[0].gb_per_hour_max) == pytest.approx((1.0, 2.0))
    assert report.knee is None and report.still_growing
    assert report.per_session_gb_per_hour == pytest.approx(2.0)  # the best point's 4.0 / 2


def test_timings_and_copied_bytes_are_read_from_the_mailbox_hash(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    jobs = [
        NewJob(f"{i:05d}", i + 1, f"s{i}@x.test", f"t{i}@x.test", f"key{i}", "{}") for i in (1, 2)
    ]
    store.create_batch("b1", {}, jobs)
    store.client.hset(
        "migrator:mbx:b1:00001",
        mapping={
            "source_seconds": "1.5",
            "target_seconds": "2.25",
            "throttle_seconds": "0.75",
            "copied_bytes": "4096",
        },
    )
    store.client.hset("migrator:mbx:b1:00002", mapping={"target_seconds": "not a number"})
    extras = read_extras(store, "b1", ["00001", "00002"])
    assert extras["00001"] == Extra(Timings(1.5, 2.25, 0.75), 4096)
    assert extras["00002"] == Extra(Timings(), None)
    point = point_from_store(store, "b1", 1, 1)
    assert point.total.timings == Timings(1.5, 2.25, 0.75)


def test_forgetting_checkpoints_touches_only_the_pilot_mailboxes(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    ref = MessageRef("INBOX", 1, "1", 10, None)
    for key in ("pilot1", "pilot2", "other"):
        store.progress("b", "1", key).copied([(ref, "k")])
    assert store.forget_checkpoints(["pilot1", "pilot2"]) == 2
    assert store.forget_checkpoints([]) == 0
    assert store.progress("b", "1", "pilot1").checkpoints() == {}
    assert store.progress("b", "1", "other").checkpoints() == {("INBOX", 1, "1"): "k"}


def _report() -> VelocityReport:
    rows = [status("1", started=T0, updated=T0 + 40, copied=3, done=3, done_bytes=3_000)]
    points = tuple(
        build_point(f"b-c{c}-r1", c, 1, rows, [(MINUTE, 3, 3_000 * c)], {}) for c in (1, 2)
    )
    return VelocityReport("run <1>", {"csv": "pilot & co.csv"}, points)


def test_html_is_self_contained_with_inline_svg_charts() -> None:
    page = render_html(_report())
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""\b(src|href)\s*=""", page)
    assert "<script" not in page
    assert page.count("<svg") == 2  # throughput over time, and the concurrency curve
    assert "run &lt;1&gt;" in page and "pilot &amp; co.csv" in page
    assert "still growing at concurrency <b>2</b>" in page and "stops growing" not in page

    # Waits over several connections can exceed the wall time: summed and said so, no %.
    rows = [status("1", started=T0, updated=T0 + 10, copied=3, done=3, done_bytes=3_000)]
    waited = {"1": Extra(Timings(30.0, 25.0, 0.0), 3_000)}
    point = build_point("b", 1, 1, rows, [(MINUTE, 3, 3_000)], waited)
    page = render_html(VelocityReport("r", {}, (point,)))
    assert "summed over every connection" in page and "source 30.0 s" in page
    assert "%" not in page.split("<body>")[1]


def test_report_files_are_written_side_by_side(tmp_path: Path) -> None:
    files = write_report(_report(), tmp_path / "out")
    data = json.loads(files.json.read_text())
    assert [p["concurrency"] for p in data["points"]] == [1, 2]
    assert [c["concurrency"] for c in data["curve"]] == [1, 2]
    assert data["points"][0]["total"]["bytes"] == 3_000
    assert data["knee_concurrency"] is None and data["still_growing"] is True
    assert data["gb_per_hour_per_session"] == pytest.approx(data["curve"][1]["gb_per_hour"] / 2)
    assert files.png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert files.html.parent == files.png.parent == files.json.parent

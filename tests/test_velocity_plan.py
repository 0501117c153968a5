"""`migrator velocity plan`: the wave arithmetic as tables of inventories and plans,
the inventory CSV format, and the command's JSON.

Most cases use 1 GB/hour per session and a 10-hour window, so one session moves
10 GB per wave and sizes read in whole GB.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from migrator.errors import BatchError, ConfigError
from migrator.velocity.cli import add_velocity_commands
from migrator.velocity.inventory import format_inventory, parse_inventory, read_inventory_file
from migrator.velocity.plan import (
    GB,
    InventoryRow,
    PlanOptions,
    WarningKind,
    WavePlan,
    plan_waves,
)

DATA = Path(__file__).parent / "data" / "velocity"


def mb(identity: str, gb: float, group: str = "", **kw: object) -> InventoryRow:
    return InventoryRow(identity=identity, size_bytes=int(gb * GB), group=group, **kw)  # type: ignore[arg-type]


def opts(**kw: object) -> PlanOptions:
    values: dict[str, object] = {"throughput_gb_per_hour": 1.0, "window_hours": 10.0}
    values.update(kw)
    return PlanOptions(**values)  # type: ignore[arg-type]


def waves(plan: WavePlan) -> list[list[str]]:
    return [list(w.identities) for w in plan.waves]


def kinds(plan: WavePlan) -> list[tuple[str, str]]:
    return sorted((w.kind.value, w.subject) for w in plan.warnings)


PACKING = [
    pytest.param([mb("a", 6), mb("b", 4)], opts(sessions=1), [["a", "b"]], id="exact-fit"),
    pytest.param(
        [mb("a", 6), mb("b", 4), mb("c", 1)],
        opts(sessions=1),
        [["a", "b"], ["c"]],
        id="one-byte-class-over-opens-a-wave",
    ),
    pytest.param(
        [mb("e", 2), mb("d", 3), mb("c", 3), mb("b", 5), mb("a", 7)],
        opts(sessions=1),
        [["a", "c"], ["b", "d", "e"]],
        id="first-fit-decreasing",
    ),
    pytest.param(
        [mb("a", 4, "sales"), mb("b", 4, "sales"), mb("c", 5), mb("d", 3)],
        opts(sessions=1),
        [["a", "b"], ["c", "d"]],
        id="group-moves-together",
    ),
    pytest.param(
        [mb("a", 4), mb("b", 4), mb("c", 5), mb("d", 3)],
        opts(sessions=1),
        [["c", "a"], ["b", "d"]],
        id="same-sizes-without-group-split",
    ),
    pytest.param(
        [mb("a", 4, "Sales"), mb("b", 4, "SALES"), mb("c", 3)],
        opts(sessions=1),
        [["a", "b"], ["c"]],
        id="group-names-case-insensitive",
    ),
    pytest.param(
        [mb("x", 2), mb("g1", 5, "big"), mb("g2", 5, "big"), mb("g3", 5, "big")],
        opts(sessions=1),
        [["g1", "g2", "g3"], ["x"]],
        id="oversize-group-alone-and-closed",
    ),
    pytest.param(
        [mb("z1", 0), mb("a", 10), mb("z2", 0)],
        opts(sessions=1),
        [["a", "z1", "z2"]],
        id="zero-size-fits-a-full-wave",
    ),
    pytest.param([mb("z1", 0), mb("z2", 0)], opts(sessions=1), [["z1", "z2"]], id="all-zero"),
    pytest.param([], opts(sessions=1), [], id="empty-inventory"),
    pytest.param(
        [mb("a", 6), mb("b", 6), mb("c", 6), mb("d", 6)],
        opts(sessions=2),
        [["a", "b", "c"], ["d"]],
        id="sessions-multiply-capacity",
    ),
    pytest.param(
        [mb(f"m{i}", 10) for i in range(10)],
        opts(waves=2),
        [[f"m{i}" for i in range(8)], ["m8", "m9"]],
        id="solved-workers-meet-wave-target",
    ),
]


@pytest.mark.parametrize(("rows", "options", "expected"), PACKING)
def test_waves_pack_largest_first_and_keep_groups(
    rows: Sequence[InventoryRow], options: PlanOptions, expected: list[list[str]]
) -> None:
    plan = plan_waves(rows, options)
    assert waves(plan) == expected
    assert [w.number for w in plan.waves] == list(range(1, len(expected) + 1))
    assert sum(w.bytes for w in plan.waves) == plan.total_bytes == sum(r.size_bytes for r in rows)


SIZING = [
    # (options, rows, workers, sessions, capacity GB)
    pytest.param(opts(sessions=10), [], 3, 10, 100, id="workers-round-up"),
    pytest.param(opts(sessions=8), [], 2, 8, 80, id="workers-exact"),
    pytest.param(opts(sessions=5, sessions_per_worker=2, workers=4), [], 4, 5, 50, id="both"),
    pytest.param(opts(workers=2), [], 2, 8, 80, id="workers-given"),
    pytest.param(opts(workers=3, sessions_per_worker=1), [], 3, 3, 30, id="one-per-worker"),
    pytest.param(opts(), [], 1, 4, 40, id="solve-empty"),
    pytest.param(opts(), [mb(f"m{i}", 10) for i in range(10)], 3, 12, 120, id="solve-one-wave"),
    pytest.param(
        opts(waves=2), [mb(f"m{i}", 10) for i in range(10)], 2, 8, 80, id="solve-two-waves"
    ),
    pytest.param(
        opts(throughput_gb_per_hour=0.5, window_hours=4, waves=3),
        [mb(f"m{i}", 1) for i in range(20)],
        1,
        4,
        8,
        id="solve-fractional-throughput",
    ),
]


@pytest.mark.parametrize(("options", "rows", "workers", "sessions", "capacity_gb"), SIZING)
def test_sessions_workers_and_wave_capacity(
    options: PlanOptions,
    rows: Sequence[InventoryRow],
    workers: int,
    sessions: int,
    capacity_gb: int,
) -> None:
    plan = plan_waves(rows, options)
    assert (plan.workers, plan.sessions) == (workers, sessions)
    assert plan.wave_capacity_bytes == capacity_gb * GB
    assert plan.session_window_bytes == int(
        options.throughput_gb_per_hour * options.window_hours * GB
    )


def test_solved_workers_are_the_fewest_that_meet_the_wave_target() -> None:
    rows = [mb(f"m{i}", 7) for i in range(9)]
    plan = plan_waves(rows, opts(waves=2))
    assert len(plan.waves) <= 2
    fewer = plan_waves(rows, opts(workers=plan.workers - 1)) if plan.workers > 1 else None
    assert fewer is None or len(fewer.waves) > 2


HOURS = [
    # rows, options, hours per wave
    pytest.param([mb("a", 6), mb("b", 4)], opts(sessions=1), [10.0], id="one-session"),
    pytest.param([mb("a", 6), mb("b", 6)], opts(sessions=2), [6.0], id="shared-bytes"),
    pytest.param([mb("a", 8), mb("b", 1)], opts(sessions=4), [8.0], id="largest-mailbox-bounds"),
    pytest.param([mb("a", 3)], opts(sessions=1, throughput_gb_per_hour=2), [1.5], id="rate"),
    pytest.param([mb("z", 0)], opts(sessions=1), [0.0], id="zero"),
    pytest.param(
        [mb("g1", 5, "big"), mb("g2", 5, "big"), mb("g3", 5, "big"), mb("x", 2)],
        opts(sessions=1),
        [15.0, 2.0],
        id="oversize-wave-runs-long",
    ),
]


@pytest.mark.parametrize(("rows", "options", "hours"), HOURS)
def test_wave_hours_and_total_duration(
    rows: Sequence[InventoryRow], options: PlanOptions, hours: list[float]
) -> None:
    plan = plan_waves(rows, options)
    assert [w.hours for w in plan.waves] == pytest.approx(hours)
    assert plan.total_hours == pytest.approx(sum(hours))


WARNINGS = [
    pytest.param([mb("a", 1, items={"Inbox": 20_000})], [], id="inbox-at-threshold"),
    pytest.param([mb("a", 1, items={"INBOX": 20_001})], [("items", "a")], id="inbox-over-any-case"),
    pytest.param([mb("a", 1, items={"Sent Items": 25_000})], [("items", "a")], id="sent"),
    pytest.param([mb("a", 1, items={"Deleted Items": 20_001})], [("items", "a")], id="deleted"),
    pytest.param([mb("a", 1, items={"Calendar": 5_001})], [("items", "a")], id="calendar"),
    pytest.param([mb("a", 1, items={"Contacts": 5_000})], [], id="contacts-at-threshold"),
    pytest.param([mb("a", 1, items={"Archive": 100_000})], [], id="other-folders-unlimited"),
    pytest.param(
        [mb("a", 1, items={"Inbox": 30_000, "Calendar": 6_000})],
        [("items", "a"), ("items", "a")],
        id="two-folders",
    ),
    pytest.param([mb("a", 6, quota_bytes=5 * GB)], [("quota", "a")], id="over-quota"),
    pytest.param([mb("a", 5, quota_bytes=5 * GB)], [], id="quota-exact"),
    pytest.param([mb("a", 5)], [], id="no-quota-known"),
    pytest.param(
        [mb("a", 12)],
        [("long_mailbox", "a"), ("long_wave", "wave 1"), ("oversize", "a")],
        id="mailbox-larger-than-a-wave",
    ),
    pytest.param(
        [mb("g1", 6, "team"), mb("g2", 6, "team")],
        [("long_wave", "wave 1"), ("oversize", "team")],
        id="oversize-group",
    ),
]


@pytest.mark.parametrize(("rows", "expected"), WARNINGS)
def test_warnings_for_quota_item_thresholds_and_oversize(
    rows: Sequence[InventoryRow], expected: list[tuple[str, str]]
) -> None:
    assert kinds(plan_waves(rows, opts(sessions=1))) == sorted(expected)


def test_long_mailbox_warned_even_when_the_wave_has_room() -> None:
    plan = plan_waves([mb("a", 25)], opts())  # solved: 4 sessions, 40 GB a wave
    assert waves(plan) == [["a"]]
    assert not plan.waves[0].oversize
    assert {w.kind for w in plan.warnings} == {WarningKind.LONG_MAILBOX, WarningKind.LONG_WAVE}
    assert plan.waves[0].hours == pytest.approx(25.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (opts(throughput_gb_per_hour=0), "throughput"),
        (opts(window_hours=-1), "window"),
        (opts(sessions=0), "sessions"),
        (opts(sessions=9, workers=2), "need 3 workers"),
        (opts(waves=0), "waves"),
        (opts(throughput_gb_per_hour=1e-12, window_hours=1), "less than one byte"),
    ],
)
def test_options_that_cannot_make_a_plan_are_refused(options: PlanOptions, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_waves([mb("a", 1)], options)


# -- the inventory CSV ------------------------------------------------------------------


def test_inventory_rows_read_items_group_and_quota() -> None:
    result = read_inventory_file(DATA / "inventory.csv")
    assert not result.problems
    first = result.rows[0]
    assert first.identity == "ann@example.test"
    assert first.size_bytes == 6_000_000_000
    assert first.items == {"Inbox": 21_000, "Sent Items": 300, "Calendar": 0}
    assert first.group == "Sales"
    assert first.quota_bytes == 5_000_000_000
    assert first.line == 2
    assert [r.quota_bytes for r in result.rows] == [5_000_000_000, None, None, None, None]


@pytest.mark.parametrize(
    ("text", "problems"),
    [
        ("Identity,SizeBytes\r\na@x.test,12\r\n", []),
        ("identity,sizebytes,items:Inbox\r\na@x.test,12,\r\n", []),
        ("Identity,SizeBytes\r\na@x.test,-1\r\n", [(2, "SizeBytes")]),
        ("Identity,SizeBytes\r\na@x.test,1e9\r\n", [(2, "SizeBytes")]),
        ("Identity,SizeBytes\r\n,5\r\n", [(2, "Identity")]),
        ("Identity,SizeBytes\r\na@x.test,1\r\nA@x.test,2\r\n", [(3, "Identity")]),
        ("Identity,SizeBytes,Items:Inbox\r\na@x.test,1,many\r\n", [(2, "Items:Inbox")]),
        ("Identity,SizeBytes,QuotaBytes\r\na@x.test,1,lots\r\n", [(2, "QuotaBytes")]),
        ("Identity,SizeBytes\r\n\r\na@x.test,1\r\nb@x.test,x\r\n", [(4, "SizeBytes")]),
    ],
)
def test_inventory_problems_name_line_and_column(
    text: str, problems: list[tuple[int, str]]
) -> None:
    result = parse_inventory(text)
    assert [(p.line, p.column) for p in result.problems] == problems


@pytest.mark.parametrize(
    "text",
    ["", "Identity,Items:Inbox\r\n", "Identity,SizeBytes,Items:\r\n", 'Identity,SizeBytes\r\n"a'],
)
def test_inventory_without_required_columns_or_csv_is_refused(text: str) -> None:
    with pytest.raises(BatchError):
        parse_inventory(text)


def test_inventory_format_reads_back_the_same_rows() -> None:
    rows = (
        InventoryRow("a@x.test", 10, {"Inbox": 3, "Sent Items": 1}, "", 100, line=2),
        InventoryRow("b@x.test", 0, {"Archive/2019": 7}, "Team, West", None, line=3),
    )
    again = parse_inventory(format_inventory(rows))
    assert not again.problems
    assert [r.identity for r in again.rows] == ["a@x.test", "b@x.test"]
    assert again.rows[0].items == {"Inbox": 3, "Sent Items": 1, "Archive/2019": 0}
    assert again.rows[1].items == {"Inbox": 0, "Sent Items": 0, "Archive/2019": 7}
    assert (again.rows[1].group, again.rows[0].quota_bytes, again.rows[1].quota_bytes) == (
        "Team, West",
        100,
        None,
    )


# -- the command ------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="migrator")
    add_velocity_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_plan_command_prints_waves_workers_and_warnings_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = _main(
        [
            "velocity",
            "plan",
            str(DATA / "inventory.csv"),
            "--throughput",
            "1",
            "--window",
            "2.5",
            "--sessions",
            "2",
            "--json",
        ]
    )
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    # 5 GB a wave; Sales (ann 6 + bob 1) is oversize; carl 3 + dora 2 fill one, and eve
    # (empty) still fits there.
    assert [w["mailboxes"] for w in plan["waves"]] == [
        ["ann@example.test", "bob@example.test"],
        ["carl@example.test", "dora@example.test", "eve@example.test"],
    ]
    assert [w["oversize"] for w in plan["waves"]] == [True, False]
    assert (plan["workers"], plan["sessions"], plan["wave_count"]) == (1, 2, 2)
    assert {(w["kind"], w["subject"]) for w in plan["warnings"]} >= {
        ("quota", "ann@example.test"),
        ("items", "ann@example.test"),
        ("oversize", "Sales"),
        ("items", "eve@example.test"),
    }


def test_plan_command_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    code = _main(
        ["velocity", "plan", str(DATA / "inventory.csv"), "--throughput", "2", "--window", "8"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "1 wave\n" in out and "1 waves" not in out and "ann@example.test" in out
    assert "1 worker x 4 sessions per worker" in out


def test_plan_takes_the_throughput_per_session_from_a_velocity_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "velocity.json"
    report.write_text(json.dumps({"gb_per_hour_per_session": 2.0, "knee_concurrency": 4}))
    args = ["velocity", "plan", str(DATA / "inventory.csv"), "--window", "8", "--json"]

    assert _main([*args, "--from-report", str(report)]) == 0
    from_report = json.loads(capsys.readouterr().out)
    assert _main([*args, "--throughput", "2"]) == 0
    assert from_report == json.loads(capsys.readouterr().out)

    report.write_text("{}")
    with pytest.raises(ConfigError, match="gb_per_hour_per_session"):
        _main([*args, "--from-report", str(report)])

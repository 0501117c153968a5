"""`migrator velocity run|plan` and `migrator inventory`, hooked into the main parser
by `add_velocity_commands` (called from migrator.cli's `_parser()`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from migrator.argtypes import TIMEOUT, WORKERS, Amount, Count, CountList

# The module, not its names: migrator.cli imports this module while it loads.
from migrator.batchprep import print_problems, read_batch
from migrator.cliargs import batch_arguments, run_arguments
from migrator.connectors import connector
from migrator.errors import ConfigError
from migrator.foldermap import default_folder_map, load_folder_map
from migrator.model import ConnectOptions
from migrator.quotas import read_quota_file
from migrator.terminal import console, err_console
from migrator.velocity.inventory import format_inventory, read_inventory_file
from migrator.velocity.plan import GB, PlanOptions, WavePlan, plan_waves
from migrator.velocity.run import EMPTY_TARGETS_FLAG, run_velocity
from migrator.velocity.survey import survey_batch

# A wave plan's figures: GB/hour per session, hours per wave (a year at most), sessions.
THROUGHPUT = Amount(high=1_000_000.0)
WINDOW = Amount(high=24 * 366.0)
SESSIONS = Count(1, 100_000)


def add_velocity_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add `velocity` (with `run` and `plan`) and `inventory` to the `migrator` command."""
    velocity = sub.add_parser("velocity", help="measure a pilot's throughput; size the waves")
    commands = velocity.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run a pilot batch (as `migrator run`) and write a throughput report"
    )
    batch_arguments(run)
    run_arguments(run)
    run.add_argument(
        "--concurrency",
        type=CountList(WORKERS),
        help="pool sizes to measure in turn, e.g. 1,2,4,8 (default: --workers)",
    )
    run.add_argument("--repeat", type=Count(1, 100), default=1, help="runs per concurrency")
    run.add_argument(
        EMPTY_TARGETS_FLAG,
        dest="empty_targets",
        action="store_true",
        help="before each point, DELETE all mail in the pilot's target mailboxes "
        "(needed for more than one point)",
    )
    run.add_argument("--report-dir", type=Path, help="default: ./velocity-BATCHID")
    run.add_argument("--slowest", type=Count(), default=5, help="slowest mailboxes shown")
    run.set_defaults(func=cmd_velocity_run)
    _plan_parser(commands)
    _inventory_parser(sub)


def _plan_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    plan = commands.add_parser("plan", help="size the waves from an inventory and a throughput")
    plan.add_argument("inventory_csv", type=Path, help="the inventory (`migrator inventory`)")
    speed = plan.add_mutually_exclusive_group(required=True)
    speed.add_argument(
        "--throughput",
        type=THROUGHPUT,
        help="GB/hour per session: the 'GB/hour per session' that `velocity run` prints",
    )
    speed.add_argument(
        "--from-report",
        type=Path,
        metavar="VELOCITY_JSON",
        help="take the throughput per session from a `velocity run` report (velocity.json): "
        "at its knee, or at its best point",
    )
    plan.add_argument("--window", type=WINDOW, required=True, help="hours per wave")
    plan.add_argument("--sessions", type=SESSIONS, help="concurrent sessions")
    plan.add_argument(
        "--sessions-per-worker",
        type=Count(1, 1_000),
        default=4,
        help="mailboxes one worker copies at once (its --concurrency; default 4)",
    )
    plan.add_argument("--workers", type=SESSIONS, help="default: solved for")
    plan.add_argument(
        "--waves", type=Count(1, 1_000), default=1, help="most waves wanted when solving workers"
    )
    plan.add_argument("--json", action="store_true", help="as JSON")
    plan.set_defaults(func=cmd_velocity_plan)


def _inventory_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    inventory = sub.add_parser(
        "inventory", help="read sizes and item counts from the source servers into a CSV"
    )
    batch_arguments(inventory)
    inventory.add_argument("-o", "--output", type=Path, help="default: standard output")
    inventory.add_argument("--quotas", type=Path, help="activation CSV: fills QuotaBytes")
    inventory.add_argument("--foldermap", type=Path, help="names target folders for item counts")
    inventory.add_argument("--ca-file", help="CA bundle for servers with a private CA")
    inventory.add_argument("--insecure", action="store_true", help="do not verify certificates")
    inventory.add_argument(
        "--allow-plaintext", action="store_true", help="allow servers without STARTTLS"
    )
    inventory.add_argument(
        "--timeout",
        type=TIMEOUT,
        default=60.0,
        metavar="SECONDS",
        help="seconds a server may take to connect or to answer (default 60)",
    )
    inventory.add_argument("--workers", type=WORKERS, default=4, help="mailboxes at a time")
    inventory.set_defaults(func=cmd_inventory)


def cmd_velocity_run(args: argparse.Namespace) -> int:
    outcome = run_velocity(
        args, say=lambda text: err_console.print(text, highlight=False, markup=False)
    )
    report = outcome.report
    table = Table(title=f"velocity {report.run_id}")
    for column in ("Concurrency", "Runs", "GB/hour", "GB/hour per session", "Messages/s"):
        table.add_column(column, justify="right")
    for point in report.curve:
        table.add_row(
            str(point.concurrency),
            str(point.runs),
            f"{point.gb_per_hour:.3f}",
            f"{point.gb_per_hour / point.concurrency:.3f}",
            f"{point.messages_per_second:.1f}",
        )
    console.print(table)
    if report.knee is not None:
        console.print(f"throughput stops growing at concurrency {report.knee}", highlight=False)
    elif report.still_growing:
        console.print(
            f"throughput was still growing at concurrency {report.curve[-1].concurrency}, "
            "the largest tried",
            highlight=False,
        )
    if report.per_session_gb_per_hour is not None:
        console.print(
            f"per session: {report.per_session_gb_per_hour:.3f} GB/hour "
            f"(`velocity plan --from-report {outcome.files.json}`)",
            highlight=False,
        )
    for path in (outcome.files.json, outcome.files.html, outcome.files.png):
        console.print(str(path), highlight=False, markup=False)
    return 0 if outcome.all_done else 1


def cmd_velocity_plan(args: argparse.Namespace) -> int:
    result = read_inventory_file(args.inventory_csv)
    if result.problems:
        for problem in result.problems:
            err_console.print(f"{args.inventory_csv}:{problem}", highlight=False, markup=False)
        raise ConfigError(f"{args.inventory_csv}: {len(result.problems)} bad rows; no plan made")
    throughput = args.throughput or _from_report(args.from_report)
    try:
        plan = plan_waves(
            result.rows,
            PlanOptions(
                throughput_gb_per_hour=throughput,
                window_hours=args.window,
                sessions=args.sessions,
                sessions_per_worker=args.sessions_per_worker,
                workers=args.workers,
                waves=args.waves,
            ),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.json:
        print(json.dumps(plan.as_dict(), indent=2))
    else:
        _print_plan(plan)
    return 0


def _from_report(path: Path) -> float:
    """The per-session GB/hour a `velocity run` report recorded."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"{path}: not a velocity report (not JSON)") from None
    value = data.get("gb_per_hour_per_session") if isinstance(data, dict) else None
    if not isinstance(value, int | float) or value <= 0:
        raise ConfigError(
            f"{path}: no 'gb_per_hour_per_session' in it (a report of `velocity run`, "
            "this version or later)"
        )
    err_console.print(f"throughput from {path}: {value:.3f} GB/hour per session")
    return float(value)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _print_plan(plan: WavePlan) -> None:
    table = Table(title=_plural(len(plan.waves), "wave"))
    for column, justify in (
        ("Wave", "right"),
        ("Mailboxes", "right"),
        ("GB", "right"),
        ("Hours", "right"),
        ("Who (largest first)", "left"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for wave in plan.waves:
        table.add_row(
            str(wave.number) + (" (oversize)" if wave.oversize else ""),
            str(len(wave.identities)),
            f"{wave.bytes / GB:.2f}",
            f"{wave.hours:.1f}",
            escape(", ".join(wave.identities)),
        )
    console.print(table)
    console.print(
        f"{_plural(plan.workers, 'worker')} x "
        f"{_plural(plan.sessions_per_worker, 'session')} per worker "
        f"({_plural(plan.sessions, 'session')}); "
        f"a wave holds {plan.wave_capacity_bytes / GB:.2f} GB; "
        f"{plan.total_bytes / GB:.2f} GB in {plan.total_hours:.1f} hours of moving",
        highlight=False,
    )
    for warning in plan.warnings:
        console.print("[yellow]warning:[/]", escape(warning.message), highlight=False)


def cmd_inventory(args: argparse.Namespace) -> int:
    source = connector(args.source_type)
    if not source.surveys:
        raise ConfigError(f"inventory cannot read {args.source_type} sources")
    result = read_batch(args)
    if result.problems:
        print_problems(result, args.batch_csv)
        raise ConfigError(f"{args.batch_csv}: {len(result.problems)} problems; nothing was read")
    quotas = None
    if args.quotas:
        quota_result = read_quota_file(args.quotas)
        if quota_result.problems:
            raise ConfigError(f"{args.quotas}: bad rows (`migrator validate` style: fix them)")
        quotas = dict(quota_result.quotas)
    folder_map = load_folder_map(args.foldermap) if args.foldermap else default_folder_map()
    survey = survey_batch(
        args.source_type,
        result.jobs,
        ConnectOptions(
            timeout=args.timeout,
            ca_file=args.ca_file,
            insecure=args.insecure,
            allow_plaintext=args.allow_plaintext,
        ),
        folder_map,
        quotas=quotas,
        workers=args.workers,
    )
    text = format_inventory(survey.rows)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        print(text, end="")
    for failure in survey.failures:
        err_console.print(
            f"{args.batch_csv}:line {failure.line}: {failure.identity}: {failure.error}",
            highlight=False,
            markup=False,
        )
    return 1 if survey.failures else 0

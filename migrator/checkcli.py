"""`migrator check BATCH.csv`: the preflight of a wave (migrator.preflight), with the
options of `run`; nothing is written anywhere."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from migrator.argtypes import WORKERS
from migrator.batchprep import prepare
from migrator.cliargs import batch_arguments, run_arguments
from migrator.clihelp import config_argument
from migrator.foldermap import default_folder_map, parse_folder_map
from migrator.jobs import Job
from migrator.preflight import RowCheck, check_jobs
from migrator.secrets import SecretBox, new_key
from migrator.terminal import err_console, wide_console

EXAMPLES = """examples:
  migrator check wave1.csv --method individual --target-server imaps://new.example \\
      --target-admin admin --target-admin-password-file admin.pw
  migrator check wave1.csv --method combined --admin admin --admin-password-file src.pw \\
      --target ews --target-server outlook.office365.com --impersonate --json
"""


def add_check_command(sub: Any) -> None:
    check = sub.add_parser(
        "check",
        help="log in to every row's source and target before a wave; say why a row is not ready",
        description="Logs in to the source and the target of every row of the batch, several "
        "at a time, as a worker would, and reports each mailbox's messages and size, the "
        "target's quota, and exactly why a row is not ready (wrong password, no such "
        "mailbox, a server that does not answer). Takes the options of `run`; nothing is "
        "enqueued or written.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batch_arguments(check)
    run_arguments(check)
    config_argument(check)
    check.add_argument(
        "--parallel",
        type=WORKERS,
        default=8,
        metavar="N",
        help="rows checked at once (default 8)",
    )
    check.add_argument("--json", action="store_true", help="as JSON, a row per mailbox")
    check.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    box = SecretBox(new_key())  # the jobs live in this process only: a key of their own
    _, _, new_jobs = prepare(args, box)
    batch = [Job.from_json(j.payload) for j in new_jobs]
    xml = batch[0].options.foldermap_xml if batch else None
    folder_map = parse_folder_map(xml.encode(), source="--foldermap") if xml else None
    with Progress(
        TextColumn("logging in"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    ) as progress:
        bar = progress.add_task("check", total=len(batch))
        results = check_jobs(
            batch,
            box,
            folder_map or default_folder_map(),
            parallel=args.parallel,
            done=lambda _: progress.advance(bar),
        )
    if args.json:
        print(json.dumps([{**r.__dict__, "ready": r.ready} for r in results], indent=2))
    else:
        wide_console().print(_table(results))
    ready = sum(r.ready for r in results)
    err_console.print(f"{ready} rows ready, {len(results) - ready} not ready", highlight=False)
    return 0 if ready == len(results) else 1


def _table(results: list[RowCheck]) -> Table:
    table = Table(title="preflight")
    for column in ("Line", "Source", "Target", "Ready", "Messages", "MB", "Target quota"):
        table.add_column(
            column, justify="right" if column in ("Line", "Messages", "MB") else "left"
        )
    table.add_column("Why not ready / notes", overflow="fold", min_width=20)
    for r in results:
        quota = ""
        if r.quota_limit is not None:
            quota = f"{(r.quota_usage or 0) / 1e6:.1f}/{r.quota_limit / 1e6:.1f} MB"
        table.add_row(
            str(r.line),
            escape(r.source),
            escape(r.target),
            "[green]ready[/]" if r.ready else "[red]NOT READY[/]",
            "" if r.messages is None else str(r.messages),
            "" if r.size_bytes is None else f"{r.size_bytes / 1e6:.1f}",
            quota,
            escape("; ".join(r.problems + r.notes)),
        )
    return table

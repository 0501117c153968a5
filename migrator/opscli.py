"""What operators look at from the command line: `report` (a helpdesk's per-mailbox
figures, skipped messages and event log) and `batches` (every batch this Redis holds)."""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from migrator.argtypes import PORT, TIMEOUT
from migrator.cliargs import password_from
from migrator.errors import ConfigError
from migrator.localredis import PrivateRedis, shared_url, shown_url, state_dir
from migrator.mailboxreport import FORMATS, mailbox_report, render, select_rows
from migrator.rates import duration_text
from migrator.state import StateStore
from migrator.terminal import err_console, wide_console

DASHBOARD_TOKEN_ENV = "MIGRATOR_DASHBOARD_TOKEN"


@contextlib.contextmanager
def reading_store() -> Iterator[tuple[StateStore, str]]:
    """The store the commands read (MIGRATOR_REDIS_URL, or the state directory's private
    Redis), and where that is, for an operator told a batch is not there."""
    url = shared_url()
    if url:
        yield StateStore.from_url(url), f"the Redis at {shown_url(url)}"
        return
    directory = state_dir()
    with PrivateRedis(directory) as private:
        yield StateStore.from_url(private.url), f"the state directory {directory}"


def known_batch(store: StateStore, batch_id: str, where: str) -> None:
    """ConfigError naming where migrator looked, when `batch_id` is not there."""
    if not store.batch_exists(batch_id):
        raise ConfigError(
            f"batch {batch_id} is not in {where} (`migrator batches` lists those there; "
            "set MIGRATOR_REDIS_URL or MIGRATOR_STATE_DIR to look elsewhere)"
        )


def add_ops_commands(sub: Any) -> None:
    report = sub.add_parser(
        "report",
        help="per-mailbox figures, skipped messages and event log, for a helpdesk",
        description="What happened to each mailbox of a batch: counts, sizes, times, every "
        "skipped message and why, the error, and the event log (start, passes, reconnects, "
        "throttling, skips, quota stop, end).",
        epilog="examples:\n  migrator report 20260101-wave1\n"
        "  migrator report 20260101-wave1 alice@example.com\n"
        "  migrator report 20260101-wave1 --format csv > wave1.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument("batch", help="the batch id (`migrator batches` lists them)")
    report.add_argument(
        "mailbox", nargs="?", help="one mailbox only: its job id, source or target identity"
    )
    report.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text (default), json (everything), or csv (one row per mailbox)",
    )
    report.set_defaults(func=cmd_report)

    batches = sub.add_parser(
        "batches",
        help="list the batches in this Redis with their states and ages",
        epilog="example:\n  MIGRATOR_REDIS_URL=redis://redis:6379/0 migrator batches",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    batches.add_argument("--json", action="store_true", help="as JSON")
    batches.set_defaults(func=cmd_batches)
    _dashboard_parser(sub)


def _dashboard_parser(sub: Any) -> None:
    dashboard = sub.add_parser(
        "dashboard",
        help="serve a read-only web page of the batches (and /metrics for Prometheus)",
        description="A web page over the same Redis as `status`: every batch, its progress, "
        "rates, ETA and errors grouped by reason, each mailbox's skipped messages and event "
        "log; it updates by itself. /metrics serves the figures to Prometheus. Bound to "
        "loopback unless told otherwise, and then only with a token.",
        epilog="examples:\n  migrator dashboard                       # http://127.0.0.1:8750/\n"
        "  MIGRATOR_DASHBOARD_TOKEN=... migrator dashboard --host 0.0.0.0 --port 8750",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    dashboard.add_argument("--port", type=PORT, default=8750, help="port (default 8750)")
    dashboard.add_argument(
        "--token-file",
        type=Path,
        help=f"file holding the token asked for off loopback (or ${DASHBOARD_TOKEN_ENV}): "
        "a bearer token, or the password of basic auth in a browser",
    )
    dashboard.add_argument(
        "--refresh",
        type=TIMEOUT,
        default=2.0,
        metavar="SECONDS",
        help="how often the page reads the figures again (default 2 seconds)",
    )
    dashboard.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args: argparse.Namespace) -> int:
    import uvicorn

    from migrator.dashboard.app import check_binding, create_app

    token = password_from(args.token_file, DASHBOARD_TOKEN_ENV, "dashboard token")
    check_binding(args.host, token)
    with reading_store() as (store, where):
        app = create_app(store, token, interval=args.refresh)
        err_console.print(
            f"dashboard of {where} on http://{args.host}:{args.port}/", highlight=False
        )
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    with reading_store() as (store, where):
        known_batch(store, args.batch, where)
        rows = select_rows(store, args.batch, args.mailbox)
        folders = args.format != "csv"  # a CSV row has no room for them
        reports = [mailbox_report(store, row, with_folders=folders) for row in rows]
    print(render(args.batch, reports, args.format), end="")
    return 0


def cmd_batches(args: argparse.Namespace) -> int:
    import json

    with reading_store() as (store, where):
        summaries = [store.batch_summary(b) for b in store.batch_ids()]
    if args.json:
        print(json.dumps([s.__dict__ for s in summaries], indent=2))
        return 0
    now = time.time()
    table = Table(title=f"batches in {where}")
    for column in ("Batch", "Created", "Mailboxes", "States", "Last change"):
        table.add_column(column)
    for s in summaries:
        states = ", ".join(f"{n} {state}" for state, n in s.states.items() if n)
        table.add_row(
            s.batch_id,
            f"{duration_text(now - s.created)} ago" if s.created else "",
            str(s.mailboxes),
            states,
            f"{duration_text(now - s.updated)} ago" if s.updated else "",
        )
    wide_console().print(table)
    return 0

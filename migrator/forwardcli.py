"""`migrator forwarding set|remove|status BATCH.csv`: added to the command line by
`add_forwarding_commands` (called from migrator.cli's `_parser()`).

Each mailbox is one job, a Celery task where MIGRATOR_REDIS_URL names the workers'
Redis, else run here with this machine's private Redis; each writes its outcome to
Redis, and the command prints them when all have answered."""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rich.markup import escape
from rich.table import Table

from migrator import dispatch
from migrator.argtypes import TIMEOUT, WAIT, WORKERS
from migrator.batchprep import print_problems, read_batch, secret_box
from migrator.cliargs import batch_arguments, sieve_port_argument
from migrator.connectors import connector
from migrator.connectors.base import Role
from migrator.errors import ConfigError
from migrator.forwarding import ForwardAction, ForwardState
from migrator.forwardjobs import (
    ForwardOptions,
    build_forward_jobs,
    execute_forwarding,
    key_of,
)
from migrator.jobs import Job
from migrator.localredis import REDIS_URL_ENV, PrivateRedis, shared_url, state_dir
from migrator.model import ConnectOptions
from migrator.oauth.options import oauth_config
from migrator.state import StateStore
from migrator.terminal import console, err_console

# The state each action aims for; anything else makes the command exit 1.
_WANTED = {
    ForwardAction.SET: {ForwardState.SET},
    ForwardAction.REMOVE: {ForwardState.REMOVED},
    ForwardAction.STATUS: {ForwardState.SET, ForwardState.NOT_SET},
}
_STYLE = {"set": "green", "removed": "green", "manual": "yellow", "refused": "red", "failed": "red"}


def add_forwarding_commands(sub: Any) -> None:
    forwarding = sub.add_parser(
        "forwarding", help="set, remove or check forwarding from the old mailboxes to the new"
    )
    actions = forwarding.add_subparsers(required=True, metavar="ACTION")
    for action, text in (
        (ForwardAction.SET, "forward each SourceIdentity's new mail to its TargetIdentity"),
        (ForwardAction.REMOVE, "remove our forwarding; the user's own rules stay as they were"),
        (ForwardAction.STATUS, "check each source mailbox's forwarding"),
    ):
        command = actions.add_parser(action.value, help=text)
        batch_arguments(command)
        sieve_port_argument(command)
        command.add_argument("--ca-file", help="CA bundle for servers with a private CA")
        command.add_argument(
            "--insecure", action="store_true", help="do not verify TLS certificates"
        )
        command.add_argument(
            "--allow-plaintext", action="store_true", help="allow servers without STARTTLS"
        )
        command.add_argument(
            "--timeout",
            type=TIMEOUT,
            default=60.0,
            metavar="SECONDS",
            help="seconds a server may take to connect or to answer (default 60)",
        )
        command.add_argument("--workers", type=WORKERS, default=4, help="in-process pool size")
        command.add_argument(
            "--wait", type=WAIT, default=900.0, help="with Celery: seconds to wait for answers"
        )
        command.add_argument("--json", action="store_true", help="print the outcomes as JSON")
        command.set_defaults(func=cmd_forwarding, action=action)


def cmd_forwarding(args: argparse.Namespace) -> int:
    action = ForwardAction(args.action)
    if not connector(args.source_type).receives_mail:
        raise ConfigError(
            f"a {args.source_type} source is files that receive no mail: there is no "
            "forwarding to set, remove or check"
        )
    result = read_batch(args)
    if result.problems:
        print_problems(result, args.batch_csv)
        raise ConfigError(
            f"{args.batch_csv}: {len(result.problems)} problems; nothing was done "
            "(`migrator validate` lists them)"
        )
    connect = ConnectOptions(
        timeout=args.timeout,
        ca_file=args.ca_file,
        insecure=args.insecure,
        allow_plaintext=args.allow_plaintext,
    )
    options = ForwardOptions(
        source_kind=args.source_type,
        connect=connect,
        sieve_port=args.sieve_port,
        source_settings=connector(args.source_type).settings(args, Role.SOURCE, connect),
        source_auth=oauth_config(args, "source"),
    )
    if args.insecure:
        err_console.print("[yellow]TLS certificates are NOT verified (--insecure)[/]")
    url = shared_url()
    box = secret_box(create=not url)
    jobs = build_forward_jobs(result.jobs, options, box)
    request = uuid.uuid4().hex
    if url:
        store = StateStore.from_url(url)
        _send(action, jobs, request)
        rows = wait_for(store, jobs, request, timeout=args.wait)
    else:
        with PrivateRedis(state_dir()) as private:
            store = StateStore.from_url(private.url)

            def one(job: Job) -> None:
                execute_forwarding(store, action, job, box, request=request)

            with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
                list(pool.map(one, jobs))
            rows = wait_for(store, jobs, request, timeout=0)
    print_outcomes(rows, f"forwarding {action.value}: {args.batch_csv}", as_json=args.json)
    wanted = {s.value for s in _WANTED[action]}
    return 0 if all(r.get("state") in wanted for r in rows) else 1


def _send(action: ForwardAction, jobs: Sequence[Job], request: str) -> None:
    url = os.environ[REDIS_URL_ENV]
    dispatch.dispatcher().send_forwarding(url, action.value, [j.to_json() for j in jobs], request)


def wait_for(
    store: StateStore,
    jobs: Sequence[Job],
    request: str,
    *,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, str]]:
    """Each mailbox's forwarding record once this request wrote it (or, after `timeout`,
    whatever is there, marked as not answered)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = forwarding_rows(store, jobs)
        if all(r.get("request") == request for r in rows) or time.monotonic() >= deadline:
            break
        sleep(0.5)
    return [
        row
        if row.get("request") == request
        else {
            "source": job.source.identity,
            "line": str(job.line),
            "state": "failed",
            "detail": "no worker answered in time (is a worker running?)",
        }
        for job, row in zip(jobs, rows, strict=True)
    ]


def forwarding_rows(store: StateStore, jobs: Sequence[Job]) -> list[dict[str, str]]:
    return [store.forwarding(key_of(job)) for job in jobs]


def print_outcomes(rows: Sequence[Mapping[str, str]], title: str, *, as_json: bool) -> None:
    if as_json:
        keys = ("line", "source", "state", "method", "target", "detail")
        print(json.dumps([{k: r.get(k, "") for k in keys} for r in rows], indent=2))
        return
    table = Table(title=title)
    for column in ("Line", "Source", "Forward to", "State", "Method", "Detail"):
        table.add_column(column, justify="right" if column == "Line" else "left")
    for row in rows:
        state = row.get("state", "")
        style = _STYLE.get(state, "")
        table.add_row(
            row.get("line", ""),
            row.get("source", ""),
            row.get("target", ""),
            f"[{style}]{state}[/]" if style else state,
            row.get("method", ""),
            escape(row.get("detail", "")),
        )
    console.print(table)

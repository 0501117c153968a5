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

import migrator.cli as base
from migrator.argtypes import TIMEOUT, WAIT, WORKERS
from migrator.connectors.local.paths import LOCAL_KINDS
from migrator.errors import ConfigError
from migrator.ews import source_settings as ews_source_settings
from migrator.forwarding import ForwardAction, ForwardState
from migrator.forwardjobs import (
    ForwardOptions,
    build_forward_jobs,
    execute_forwarding,
    key_of,
)
from migrator.imapconn import ConnectOptions
from migrator.localredis import PrivateRedis, shared_url, state_dir
from migrator.state import StateStore

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
        base._batch_arguments(command)
        base.sieve_port_argument(command)
        command.add_argument("--ca-file", help="CA bundle for servers with a private CA")
        command.add_argument(
            "--insecure", action="store_true", help="do not verify TLS certificates"
        )
        command.add_argument(
            "--allow-plaintext", action="store_true", help="allow servers without STARTTLS"
        )
        command.add_argument("--timeout", type=TIMEOUT, default=60.0, metavar="SECONDS")
        command.add_argument("--workers", type=WORKERS, default=4, help="in-process pool size")
        command.add_argument(
            "--wait", type=WAIT, default=900.0, help="with Celery: seconds to wait for answers"
        )
        command.add_argument("--json", action="store_true", help="print the outcomes as JSON")
        command.add_argument(
            "--source-ews-auth", choices=["basic", "ntlm"], default="basic", help="EWS sources"
        )
        command.add_argument("--source-ews-version", help="EWS API version of the source")
        command.set_defaults(func=cmd_forwarding, action=action)


def cmd_forwarding(args: argparse.Namespace) -> int:
    action = ForwardAction(args.action)
    if args.source_type in LOCAL_KINDS:
        raise ConfigError(
            f"a {args.source_type} source is files that receive no mail: there is no "
            "forwarding to set, remove or check"
        )
    result = base._read_batch(args)
    if result.problems:
        base._print_problems(result, args.batch_csv)
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
        source_ews=ews_source_settings(args, connect) if args.source_type == "ews" else None,
    )
    if args.insecure:
        base.err_console.print("[yellow]TLS certificates are NOT verified (--insecure)[/]")
    url = shared_url()
    box = base._secret_box(create=not url)
    payloads = build_forward_jobs(result.jobs, options, box)
    request = uuid.uuid4().hex
    if url:
        store = StateStore.from_url(url)
        _send(action, payloads, request)
        rows = wait_for(store, payloads, request, timeout=args.wait)
    else:
        with PrivateRedis(state_dir()) as private:
            store = StateStore.from_url(private.url)

            def one(payload: Mapping[str, Any]) -> None:
                execute_forwarding(store, action, payload, box, request=request)

            with ThreadPoolExecutor(max_workers=max(1, args.workers)) as pool:
                list(pool.map(one, payloads))
            rows = wait_for(store, payloads, request, timeout=0)
    print_outcomes(rows, f"forwarding {action.value}: {args.batch_csv}", as_json=args.json)
    wanted = {s.value for s in _WANTED[action]}
    return 0 if all(r.get("state") in wanted for r in rows) else 1


def _send(action: ForwardAction, payloads: Sequence[Mapping[str, Any]], request: str) -> None:
    from workers.app import app  # Celery only where a broker is used
    from workers.tasks import forwarding

    url = os.environ[base.REDIS_URL_ENV]
    app.conf.update(broker_url=url, result_backend=url)
    for payload in payloads:
        forwarding.apply_async(args=[action.value, json.dumps(payload), request])


def wait_for(
    store: StateStore,
    payloads: Sequence[Mapping[str, Any]],
    request: str,
    *,
    timeout: float,
    sleep: Callable[[float], None] = time.sleep,
) -> list[dict[str, str]]:
    """Each mailbox's forwarding record once this request wrote it (or, after `timeout`,
    whatever is there, marked as not answered)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = forwarding_rows(store, payloads)
        if all(r.get("request") == request for r in rows) or time.monotonic() >= deadline:
            break
        sleep(0.5)
    return [
        row
        if row.get("request") == request
        else {
            "source": str(p["source"]["identity"]),
            "line": str(p["line"]),
            "state": "failed",
            "detail": "no worker answered in time (is a worker running?)",
        }
        for p, row in zip(payloads, rows, strict=True)
    ]


def forwarding_rows(
    store: StateStore, payloads: Sequence[Mapping[str, Any]]
) -> list[dict[str, str]]:
    return [store.forwarding(key_of(p)) for p in payloads]


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
    base.console.print(table)

"""`migrator sync` and `migrator complete`: keeping a copied batch in step until the MX
switch, then the final pass.

`sync BATCH` runs an incremental pass over every mailbox not completed (only what changed
at the source since its last pass: syncpass.py), through the Celery workers where
MIGRATOR_REDIS_URL is set, else with this machine's pool; `--every 6h` repeats it until
Ctrl-C, this command being the schedule.  `complete BATCH` runs the final pass, marks each
mailbox `completed` (never run again), and with `--forward-after-complete` switches its
forwarding on.  Messages deleted at the source are left alone unless
`--propagate-deletes`, which removes only the copies the ledger says we put there.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from migrator import dispatch
from migrator.argtypes import INTERVAL, WORKERS, Count
from migrator.batchprep import secret_box
from migrator.display import result_table, watch
from migrator.errors import ConfigError
from migrator.jobs import Job
from migrator.localredis import PrivateRedis, shared_url, state_dir
from migrator.localrun import Interrupted, run_in_process
from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore
from migrator.syncstate import PassKind, PassRequest
from migrator.terminal import EXIT_INTERRUPTED, console, err_console


def add_sync_commands(sub: Any) -> None:
    sync = sub.add_parser(
        "sync", help="an incremental pass over a batch: only what changed at the source"
    )
    _common(sync)
    sync.add_argument(
        "--every", type=INTERVAL, metavar="SPAN", help="repeat every SPAN (6h, 30m) until Ctrl-C"
    )
    sync.add_argument(
        "--times", type=Count(1, 100_000), help="with --every: stop after this many passes"
    )
    sync.set_defaults(func=cmd_sync)
    complete = sub.add_parser(
        "complete", help="the final pass after the MX switch; the mailboxes end completed"
    )
    _common(complete)
    complete.add_argument(
        "--forward-after-complete",
        action="store_true",
        help="switch each source mailbox's forwarding to its target once it is completed",
    )
    complete.set_defaults(func=cmd_complete)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("batch")
    parser.add_argument(
        "--propagate-deletes",
        action="store_true",
        help="remove at the target the copies (ours only) of messages deleted at the source",
    )
    parser.add_argument(
        "--workers", type=WORKERS, default=4, help="in-process pool size (no Redis URL)"
    )
    parser.add_argument("--no-wait", action="store_true", help="with Celery: do not wait")


def cmd_sync(args: argparse.Namespace) -> int:
    request = PassRequest(PassKind.SYNC, propagate_deletes=args.propagate_deletes)
    if args.every is None:
        return run_pass(args, request)
    stop = threading.Event()
    code = 0
    passes = 0
    try:
        while not stop.is_set():
            code = run_pass(args, request)
            passes += 1
            if args.times is not None and passes >= args.times:
                break
            err_console.print(f"next sync in {args.every:g} s (Ctrl-C stops)", highlight=False)
            stop.wait(args.every)
    except KeyboardInterrupt:
        err_console.print("sync schedule stopped")
        return EXIT_INTERRUPTED
    return code


def cmd_complete(args: argparse.Namespace) -> int:
    request = PassRequest(
        PassKind.FINAL,
        propagate_deletes=args.propagate_deletes,
        forward_after=args.forward_after_complete,
    )
    code = run_pass(args, request)
    if args.forward_after_complete and not args.no_wait:
        _print_forwarding(args.batch)
    return code


def run_pass(args: argparse.Namespace, request: PassRequest) -> int:
    """One pass of `request`'s kind over every mailbox of the batch not completed."""
    url = shared_url()
    wanted = MailboxState.COMPLETED if request.kind is PassKind.FINAL else MailboxState.SYNCED
    if url:
        store = StateStore.from_url(url)
        ids = _queue(store, args.batch, request)
        dispatch.dispatcher().send_mailboxes(url, args.batch, ids, request.to_json())
        err_console.print(f"batch {args.batch}: {request.kind.value} of {len(ids)} mailboxes")
        if args.no_wait:
            return 0
        try:
            rows = watch(store, args.batch, err_console)
        except KeyboardInterrupt:
            err_console.print(
                f"stopped watching; the workers go on (`migrator status {args.batch}`)"
            )
            return EXIT_INTERRUPTED
    else:
        box = secret_box(create=False)
        try:
            with PrivateRedis(state_dir()) as private:
                store = StateStore.from_url(private.url)
                ids = _queue(store, args.batch, request)
                rows = run_in_process(store, args.batch, ids, box, args.workers, request)
        except Interrupted as exc:
            console.print(result_table(exc.rows, f"batch {args.batch}"))
            err_console.print(exc, highlight=False, markup=False)
            return EXIT_INTERRUPTED
    console.print(result_table(rows, f"batch {args.batch}: {request.kind.value}"))
    return 0 if all(r.state in (wanted, MailboxState.COMPLETED) for r in rows) else 1


def _queue(store: StateStore, batch_id: str, request: PassRequest) -> list[str]:
    """The mailboxes the pass runs over (every one not completed), queued for it (the
    request kept on each row, for a requeue); one still queued or running (a first pass
    going on) is left as it is, and its lock makes the pass wait for it."""
    if not store.batch_exists(batch_id):
        raise ConfigError(f"batch {batch_id} is not known to this Redis")
    ids: list[str] = []
    for row in store.mailboxes(batch_id):
        if row.state is MailboxState.COMPLETED:
            continue
        store.set_pass_request(batch_id, row.job_id, request.to_json())
        if row.state.final:
            store.set_state(batch_id, row.job_id, MailboxState.QUEUED)
        ids.append(row.job_id)
    return ids


def _print_forwarding(batch_id: str) -> None:
    from migrator.forwardcli import forwarding_rows, print_outcomes

    with contextlib.ExitStack() as stack:
        url = shared_url() or stack.enter_context(PrivateRedis(state_dir())).url
        store = StateStore.from_url(url)
        jobs = _jobs(store, batch_id, store.mailboxes(batch_id))
        rows = forwarding_rows(store, jobs)
    print_outcomes(rows, f"forwarding after complete: batch {batch_id}", as_json=False)


def _jobs(store: StateStore, batch_id: str, rows: Sequence[MailboxStatus]) -> list[Job]:
    payloads = [store.payload(batch_id, r.job_id) for r in rows]
    return [Job.from_json(p) for p in payloads if p is not None]

"""`migrator run` without Celery: a pool of threads on this machine, and what Ctrl-C does
to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from migrator.display import watch
from migrator.localredis import REDIS_URL_ENV as REDIS_URL_ENV  # re-exported
from migrator.report import MailboxState
from migrator.runner import MailboxBusy, execute_job, lock_ttl
from migrator.secrets import (
    SecretBox,
)
from migrator.state import MailboxStatus, StateStore
from migrator.syncstate import PassRequest
from migrator.terminal import EXIT_INTERRUPTED, err_console


class Interrupted(Exception):
    """Ctrl-C stopped this machine's pool, once what was in flight was checkpointed."""

    def __init__(self, batch_id: str, rows: list[MailboxStatus]) -> None:
        super().__init__(f"interrupted: `migrator resume {batch_id}` goes on from here")
        self.batch_id = batch_id
        self.rows = rows


def run_in_process(
    store: StateStore,
    batch_id: str,
    job_ids: Sequence[str],
    box: SecretBox,
    workers: int,
    request: PassRequest | None = None,
) -> list[MailboxStatus]:
    """Copy these mailboxes with a pool of `workers` threads; their rows at the end.

    A first Ctrl-C starts no other mailbox (they stay queued) and stops the running
    ones once the batches in flight are checkpointed (they end interrupted), then
    raises Interrupted; a second one exits at once (130).  A mailbox another command
    holds is waited for."""
    stop = threading.Event()

    def one(job_id: str) -> None:
        while not stop.is_set():
            try:
                execute_job(store, batch_id, job_id, box, stop=stop, request=request)
            except MailboxBusy:
                stop.wait(min(lock_ttl(), 5.0))
                continue
            status = store.mailbox(batch_id, job_id)
            if status is None or status.state is not MailboxState.PAUSED:
                return
            # A daily cap: wait here until the mailbox has room again (Ctrl-C ends it).
            stop.wait(max(0.0, (status.resume_at or 0.0) - time.time()))

    with (
        _ctrl_c(stop, batch_id),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailbox") as pool,
    ):
        futures = [pool.submit(one, job_id) for job_id in job_ids]
        all_done = threading.Event()  # the bars' last redraw comes as the last mailbox ends
        left = [len(futures)]
        lock = threading.Lock()

        def ended(_future: object) -> None:
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    all_done.set()

        for future in futures:
            future.add_done_callback(ended)
        rows = watch(
            store,
            batch_id,
            err_console,
            finished=lambda: all(f.done() for f in futures),
            wake=all_done,
        )
        for future in futures:
            future.result()
    rows = store.mailboxes(batch_id) or rows
    if stop.is_set():
        raise Interrupted(batch_id, rows)
    return rows


@contextlib.contextmanager
def _ctrl_c(stop: threading.Event, batch_id: str) -> Iterator[None]:
    """SIGINT sets `stop`; a second one ends the process at once.  Python runs the handler
    in the main thread between two bytecodes, so it writes to fd 2 itself rather than
    through rich, whose lock the main thread may be holding."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; it handles them
        return

    def handler(_signum: int, _frame: object) -> None:
        if stop.is_set():
            os.write(2, f"\ninterrupted: `migrator resume {batch_id}` goes on from here\n".encode())
            # At once: the pool's threads (mid-append) are not waited for; the mailbox
            # lock expires, and the next pass recognises what reached the target.
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        os.write(
            2,
            b"\nstopping: no mailbox starts, and those being copied stop once the batches "
            b"in flight are checkpointed (Ctrl-C again to quit at once)\n",
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)

"""One target mailbox, one writer: two batches that spell the same servers two ways, and a
worker paused past its lock while another takes the mailbox over."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from celerykit import cli, wait_for
from faultkit import ExactlyOnce, enqueue
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.proxy import DOWN, TcpProxy
from support import batch_password, eventually

from migrator.report import MailboxState
from migrator.state import StateStore


def test_the_same_mailbox_in_two_batches_spelled_two_ways_at_once_is_copied_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("spelled")
    source, target = make_user(password), make_user()
    fill(source, {"INBOX": 500, "Archive": 200}, password, size_hint=6_000)
    port = dovecot.imaps_port
    pair = [(source, password, target)]
    # Both batches are queued before any worker runs, so both tasks start together.
    first = enqueue(tmp_path, f"imaps://127.0.0.1:{port}", f"imaps://127.0.0.1:{port}",
                    tls_files.ca_cert, pair)  # fmt: skip
    second = enqueue(tmp_path, f"imaps://LocalHost:{port}", f"imaps://localhost:{port}",
                     tls_files.ca_cert, pair)  # fmt: skip
    workers.start(concurrency=2)
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    (one,) = wait_for(store, first, timeout=180)
    (other,) = wait_for(store, second, timeout=180)

    assert one.state is other.state is MailboxState.SYNCED, (one, other)
    assert one.copied_messages + other.copied_messages == 700
    exactly_once.copied(source, password, target)


def _locks(store: StateStore) -> list[str]:
    return [str(k) for k in store.client.scan_iter("migrator:lock:*")]


def test_a_worker_paused_past_its_lock_appends_nothing_once_woken(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("paused")
    source, target = make_user(password), make_user()
    fill(source, {"INBOX": 900, "Sent": 300}, password, size_hint=12_000)
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    with TcpProxy(dovecot.imaps_port) as proxy:
        paused = workers.start("paused")
        batch_id = enqueue(
            tmp_path, f"imaps://127.0.0.1:{proxy.port}", f"imaps://127.0.0.1:{dovecot.imaps_port}",
            tls_files.ca_cert, [(source, password, target)], "--connections-per-mailbox", "1",
        )  # fmt: skip
        wait_for(store, batch_id, lambda rows: rows[0].done_messages >= 100, timeout=120)

        # The source stops answering this worker; once its writer has sent all it read,
        # the worker is frozen (SIGSTOP, a paused VM) between two batches.
        proxy.stall(300, direction=DOWN)
        eventually(lambda: "stall" in proxy.faults_fired, timeout=30, what="the stall")
        _until_still(store, batch_id)
        before = store.mailboxes(batch_id)[0].done_messages
        os.killpg(paused.process.pid, signal.SIGSTOP)
        try:
            eventually(
                lambda: not _locks(store), timeout=30, what="the paused worker's lock expiring"
            )
            # Another worker takes the mailbox over and finishes it.
            assert cli(["resume", batch_id, "--no-wait"])[0] == 0
            workers.start("other")
            (row,) = wait_for(store, batch_id, timeout=180)
            assert row.state is MailboxState.SYNCED, row
            assert row.done_messages == 1200 and before < 1200
        finally:
            # Woken, with the source answering again: it reads the next window at once.
            proxy.release()
            os.killpg(paused.process.pid, signal.SIGCONT)
        eventually(
            lambda: "succeeded" in paused.log.read_text(errors="replace"),
            timeout=120,
            what="the woken worker's task ending",
        )

    assert "another worker" in paused.log.read_text(errors="replace")
    exactly_once.copied(source, password, target)


def _until_still(store: StateStore, batch_id: str, quiet: float = 1.0, timeout: float = 60) -> None:
    """Until the mailbox's count of copied messages has not moved for `quiet` seconds: the
    writer has sent everything it had read."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        done = store.mailboxes(batch_id)[0].done_messages
        if done != last:
            last, since = done, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)
    raise AssertionError("the copy never stood still")

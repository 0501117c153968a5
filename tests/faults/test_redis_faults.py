"""Redis restarted, or emptied, while a worker copies: progress may be lost, mail may not."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from celerykit import cli, wait_for
from faultkit import ExactlyOnce, MailboxPairs, enqueue
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer
from servers.redis import RedisServer
from support import eventually, imaps

from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore

FOLDERS = {"INBOX": 200, "Archive/2019": 100}
# Three times as large: several mailboxes copying at once are still mid-copy at the restart.
LARGE = {"INBOX": 600, "Archive/2019": 300}


def _start(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    workers: Workers,
    tmp_path: Path,
    tag: str,
) -> tuple[str, tuple[str, str, str], StateStore]:
    """One mailbox well into its copy by a Celery worker: the batch id, the mailbox's
    (source, password, target), and the state store."""
    (pair,) = mailbox_pairs(tag, FOLDERS, size_hint=12_000)
    url = imaps(dovecot)
    workers.start("worker1")
    batch_id = enqueue(tmp_path, url, url, tls_files.ca_cert, [pair])
    store = StateStore.from_url(workers.env["MIGRATOR_REDIS_URL"])
    wait_for(store, batch_id, lambda rows: rows[0].done_messages >= 60, timeout=60)
    return batch_id, pair, store


def _lock_names(store: StateStore, batch_id: str) -> list[str]:
    """The names of the locks the running mailbox's worker holds it by."""
    (row,) = store.mailboxes(batch_id)
    names = store.lock_names(batch_id, row.job_id)
    assert names, "the worker has beaten at least once"
    return names


def _wait_until_let_go(
    store: StateStore, batch_id: str, locks: list[str], timeout: float = 120
) -> None:
    """Until the mailbox is in a final state, or no worker has held its lock for 2 s (a
    worker whose task died with Redis leaves the row at "running": an operator resumes)."""
    deadline = time.monotonic() + timeout
    free_since: float | None = None
    while time.monotonic() < deadline:
        rows = store.mailboxes(batch_id)
        if rows and rows[0].state.final:
            return
        if store.any_locked(locks):
            free_since = None
        elif free_since is None:
            free_since = time.monotonic()
        elif time.monotonic() - free_since > 2:
            return
        time.sleep(0.05)
    raise AssertionError(f"mailbox {locks} still held after {timeout} s")


def _finish(store: StateStore, batch_id: str, locks: list[str]) -> MailboxStatus:
    """Resume the batch when its mailbox did not end done; wait for it to end."""
    _wait_until_let_go(store, batch_id, locks)
    rows = store.mailboxes(batch_id)
    if not rows or not rows[0].state.copied:
        assert cli(["resume", batch_id, "--no-wait"])[0] == 0
        rows = wait_for(store, batch_id, timeout=120)
    (row,) = rows
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == sum(FOLDERS.values())
    return row


def test_redis_restarted_mid_batch_loses_no_mail_and_copies_nothing_twice(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    redis_server: RedisServer,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    batch_id, pair, store = _start(
        dovecot, mailbox_pairs, tls_files, workers, tmp_path, "redis-restart"
    )

    redis_server.restart(keep_data=True)

    # Redis came back within the clients' retries: the worker finishes by itself.
    (row,) = wait_for(store, batch_id, timeout=120)
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == sum(FOLDERS.values())
    exactly_once.copied(*pair)


def test_redis_emptied_mid_batch_then_resume_restores_the_batch_and_copies_each_once(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    batch_id, pair, store = _start(
        dovecot, mailbox_pairs, tls_files, workers, tmp_path, "redis-flush"
    )
    (before,) = store.mailboxes(batch_id)
    assert before.state is MailboxState.RUNNING
    locks = _lock_names(store, batch_id)

    redis.Redis.from_url(celery_env["MIGRATOR_REDIS_URL"]).flushall()

    # The worker goes on to the end of its mailbox; the batch is gone from Redis. Once the
    # worker let go, the operator resumes: the batch comes back from the local manifest and
    # the copier recognises what the target already holds.
    _wait_until_let_go(store, batch_id, locks)
    assert not store.batch_exists(batch_id)
    assert cli(["resume", batch_id, "--no-wait"])[0] == 0
    assert store.batch_exists(batch_id)
    _finish(store, batch_id, locks)
    exactly_once.copied(*pair)


@pytest.mark.parametrize("keep_data", [True, False], ids=["data-kept", "data-lost"])
def test_redis_restarted_under_a_pool_of_four_costs_time_never_the_worker(
    keep_data: bool,
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    redis_server: RedisServer,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    # Three mailboxes on four processes: the fourth waits in BRPOP when Redis goes away.
    pairs = mailbox_pairs(f"pool-{keep_data}", LARGE, 3, size_hint=12_000)
    url = imaps(dovecot)
    worker = workers.start(concurrency=4)
    batch_id = enqueue(
        tmp_path, url, url, tls_files.ca_cert, pairs, "--connections-per-mailbox", "1"
    )
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    rows = wait_for(
        store,
        batch_id,
        lambda rows: (
            len(rows) == 3
            and all(r.state is MailboxState.RUNNING and r.done_messages >= 30 for r in rows)
        ),
        timeout=60,
    )

    redis_server.restart(keep_data=keep_data)

    if not keep_data:
        # Redis lost the batch, and the broker its tasks. The worker goes on with the
        # mailboxes it holds (their heartbeats take the locks again) and records them; the
        # operator's resume brings the batch back from this machine's copy.
        job_ids = [r.job_id for r in rows]

        def all_recorded() -> bool:
            found = [store.mailbox(batch_id, job) for job in job_ids]
            return all(row is not None and row.state.final for row in found)

        eventually(all_recorded, timeout=120, what="the worker finishing its mailboxes")
        assert not store.batch_exists(batch_id)
        assert cli(["resume", batch_id, "--no-wait"])[0] == 0
    rows = wait_for(store, batch_id, timeout=120)
    assert [r.state for r in rows] == [MailboxState.SYNCED] * 3, rows
    assert all(r.done_messages == r.total_messages == sum(LARGE.values()) for r in rows)
    for pair in pairs:
        exactly_once.copied(*pair)

    # The same worker is still there, and takes the next batch.
    assert "Unrecoverable error" not in worker.log_text()
    (later,) = mailbox_pairs(f"pool-later-{keep_data}", LARGE, size_hint=12_000)
    next_batch = enqueue(tmp_path, url, url, tls_files.ca_cert, [later])
    (row,) = wait_for(store, next_batch, timeout=60)
    assert row.state is MailboxState.SYNCED, row
    assert worker.running

"""The whole pipeline through real Celery workers: `migrator enqueue`, a worker process,
SIGKILL in the middle of a mailbox, `migrator resume`, and a Redis that forgets."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
import redis
from celerykit import enqueue, wait_for
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, MASTER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.redis import RedisServer
from support import assert_copied_exactly, imaps, pop3s

from migrator.cli import main
from migrator.report import MailboxState
from migrator.state import StateStore

BIG_MAILBOX = {
    "INBOX": 400,
    "Sent Messages": 250,
    "Spam": 100,
    "Bulk Mail": 100,
    "Trash": 150,
    "Drafts": 50,
    "Projects/2024": 250,
    "Projects/2024/Q1": 200,
    "Données/Été": 250,
    "Archive/2019": 250,
}


def test_big_mailbox_through_a_celery_worker(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_server: RedisServer,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = "Src-Pw-big-7f3a9!"
    source, target = make_user(password), make_user()
    sent = fill(source, BIG_MAILBOX, password)
    assert len(sent) == 2000
    workers.start(concurrency=2)
    url = imaps(dovecot)
    batch_id = enqueue(tmp_path, url, url, tls_files.ca_cert, [(source, password, target)])
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])

    (row,) = wait_for(store, batch_id, timeout=300)

    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == 2000
    assert_copied_exactly(dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert main(["status", batch_id, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    (mailbox,) = status["mailboxes"]
    assert (mailbox["state"], mailbox["done_messages"]) == ("synced", 2000)
    assert sum(minute["messages"] for minute in status["throughput"]) == 2000
    # Nothing in Redis, its dump, or the worker's log holds the source password.
    dump = redis_server.dump_rdb()
    assert password.encode() not in dump
    assert MASTER_PASSWORD.encode() not in dump
    assert password not in (tmp_path / "worker.log").read_text(errors="replace")


@pytest.mark.parametrize(
    ("source_type", "flush_redis"),
    [("imap", False), ("imap", True), ("pop", False), ("pop", True)],
    ids=["imap-resume", "imap-resume-after-redis-flush", "pop3-resume", "pop3-resume-after-flush"],
)
def test_worker_killed_mid_mailbox_then_resume_copies_each_message_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    source_type: str,
    flush_redis: bool,
) -> None:
    password = "Src-Pw-kill-2b8c!"
    source, target = make_user(password), make_user()
    folders = (
        {"INBOX": 300, "Sent Messages": 200, "Projects/2024": 200}
        if source_type == "imap"
        else {"INBOX": 600}
    )
    sent = fill(source, folders, password, size_hint=20_000)
    workers.start("worker1", concurrency=2)
    batch_id = enqueue(
        tmp_path, imaps(dovecot) if source_type == "imap" else pop3s(dovecot), imaps(dovecot),
        tls_files.ca_cert, [(source, password, target)], "--source-type", source_type,
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    wait_for(store, batch_id, lambda rows: rows and rows[0].done_messages >= 150, timeout=300)

    workers[0].kill()
    killed = store.mailboxes(batch_id)[0]
    assert killed.state is MailboxState.RUNNING
    assert 0 < killed.done_messages < len(sent)
    if flush_redis:
        redis.Redis.from_url(celery_env["MIGRATOR_REDIS_URL"]).flushall()

    assert main(["resume", batch_id, "--no-wait"]) == 0
    workers.start("worker2", concurrency=2)
    (row,) = wait_for(store, batch_id, timeout=300)

    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == len(sent)
    assert_copied_exactly(
        dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context, flags=source_type == "imap"
    )

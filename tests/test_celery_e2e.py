"""The whole pipeline through real Celery workers: `migrator enqueue`, a worker process,
SIGKILL in the middle of a mailbox, `migrator resume`, and a Redis that forgets."""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from servers.celery_worker import Worker
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import PopulatedMessage, populate
from servers.redis import RedisServer
from support import default_map_target, imaps, snapshot, write_batch

from migrator.cli import main
from migrator.report import MailboxState
from migrator.secrets import new_key
from migrator.state import MailboxStatus, StateStore

REPO = Path(__file__).resolve().parent.parent

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


@pytest.fixture
def env(
    redis_url: str, tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    values = {
        "MIGRATOR_REDIS_URL": redis_url,
        "MIGRATOR_SECRET_KEY": new_key(),
        "MIGRATOR_STATE_DIR": str(tmp_path / "state"),
        "MIGRATOR_LOCK_TTL": "3",
        "SSL_CERT_FILE": str(tls_files.ca_cert),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}


@pytest.fixture
def workers(env: dict[str, str], tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def _enqueue(
    tmp_path: Path,
    dovecot: DovecotServer,
    tls_files: TlsFiles,
    pairs: list[tuple[str, str, str]],
    source_type: str = "imap",
) -> str:
    server = imaps(dovecot) if source_type == "imap" else f"pop3s://127.0.0.1:{dovecot.pop3s_port}"
    batch = write_batch(
        tmp_path / "batch.csv",
        [
            {
                "SourceIdentity": source,
                "SourceServer": server,
                "SourceLoginID": source,
                "SourcePassword": password,
                "TargetIdentity": target,
            }
            for source, password, target in pairs
        ],
    )
    secret_file = tmp_path / "target-admin.pw"
    secret_file.write_text(MASTER_PASSWORD)
    out = tmp_path / "enqueue.out"
    with out.open("w") as handle:
        old = sys.stdout
        sys.stdout = handle
        try:
            code = main(
                ["enqueue", str(batch), "--method", "individual", "--source-type", source_type,
                 "--target-server", imaps(dovecot), "--target-method", "proxyauth",
                 "--target-admin", MASTER_USER, "--target-admin-password-file", str(secret_file),
                 "--ca-file", str(tls_files.ca_cert),
                 # The worker that takes a killed one's mailbox over waits this long.
                 "--late-commit-grace", "0.5"]
            )  # fmt: skip
        finally:
            sys.stdout = old
    assert code == 0
    return out.read_text().strip().splitlines()[-1]


def _wait(
    store: StateStore, batch_id: str, until: object = None, timeout: float = 300
) -> list[MailboxStatus]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.mailboxes(batch_id)
        if until is not None and until(rows):  # type: ignore[operator]
            return rows
        if until is None and rows and all(r.state.final for r in rows):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not get there: {store.mailboxes(batch_id)}")


def _digest(message: PopulatedMessage) -> str:
    return hashlib.sha256(message.raw).hexdigest()


def _assert_exact_copy(
    dovecot: DovecotServer,
    sent: list[PopulatedMessage],
    target: str,
    password: str,
    ctx: ssl.SSLContext,
    *,
    flags: bool = True,
) -> None:
    """Same count per mapped folder, same bytes, same flags and INTERNALDATE: each
    message exactly once."""
    expected: dict[str, Counter[str]] = {}
    for message in sent:
        folder = default_map_target(tuple(message.folder.split("/")))
        expected.setdefault(folder, Counter())[_digest(message)] += 1
    view = snapshot(dovecot, target, password, ctx)
    got = {name: Counter(s.sha256 for s in items) for name, items in view.items() if items}
    assert got.keys() == expected.keys()
    for folder in expected:
        missing = expected[folder] - got[folder]
        extra = got[folder] - expected[folder]
        assert not missing and not extra, (folder, len(missing), len(extra))
    originals = {_digest(m): m for m in sent}
    for items in view.values():
        for stored in items:
            if flags:  # POP3 has no flags to carry
                assert stored.flags == frozenset(originals[stored.sha256].flags)
            assert stored.internaldate == originals[stored.sha256].internaldate


def test_big_mailbox_through_a_celery_worker(
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_server: RedisServer,
    env: dict[str, str],
    workers: list[Worker],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = "Src-Pw-big-7f3a9!"
    source, target = make_user(password), make_user()
    sent = populate(
        "127.0.0.1", dovecot.imaps_port, source, password, BIG_MAILBOX, ssl_context=ssl_context
    )
    assert len(sent) == 2000
    workers.append(Worker(env, tmp_path / "worker.log", concurrency=2))
    batch_id = _enqueue(tmp_path, dovecot, tls_files, [(source, password, target)])
    store = StateStore.from_url(env["MIGRATOR_REDIS_URL"])

    (row,) = _wait(store, batch_id)

    assert row.state is MailboxState.DONE, row
    assert row.done_messages == row.total_messages == 2000
    _assert_exact_copy(dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert main(["status", batch_id, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    (mailbox,) = status["mailboxes"]
    assert (mailbox["state"], mailbox["done_messages"]) == ("done", 2000)
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
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    env: dict[str, str],
    workers: list[Worker],
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
    sent = populate(
        "127.0.0.1",
        dovecot.imaps_port,
        source,
        password,
        folders,
        ssl_context=ssl_context,
        size_hint=20_000,
    )
    workers.append(Worker(env, tmp_path / "worker1.log", concurrency=2))
    batch_id = _enqueue(tmp_path, dovecot, tls_files, [(source, password, target)], source_type)
    store = StateStore.from_url(env["MIGRATOR_REDIS_URL"])
    _wait(store, batch_id, until=lambda rows: rows and rows[0].done_messages >= 150)

    workers[0].kill()
    killed = store.mailboxes(batch_id)[0]
    assert killed.state is MailboxState.RUNNING
    assert 0 < killed.done_messages < len(sent)
    if flush_redis:
        redis.Redis.from_url(env["MIGRATOR_REDIS_URL"]).flushall()

    assert main(["resume", batch_id, "--no-wait"]) == 0
    workers.append(Worker(env, tmp_path / "worker2.log", concurrency=2))
    (row,) = _wait(store, batch_id)

    assert row.state is MailboxState.DONE, row
    assert row.done_messages == row.total_messages == len(sent)
    _assert_exact_copy(
        dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context, flags=source_type == "imap"
    )

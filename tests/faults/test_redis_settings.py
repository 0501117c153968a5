"""A Redis URL that cannot work, a Redis that does not answer, a worker without a usable
key: one clear line within seconds, and nothing half-written.

The commands run as `python -m workers.main` (the `migrator` command) processes (their
whole output and their time are what an operator sees); the workers are real `celery -A
workers worker` processes; the TLS Redis is a real redis-server with the test CA's
certificate.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celerykit import wait_for
from faultkit import REPO, ExactlyOnce
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.ports import LOOPBACK, free_port
from support import batch_password, eventually, write_source_batch

from migrator.report import MailboxState
from migrator.state import StateStore

URL_PASSWORD = "Redis-Url-Pw-7f3a9"


def _migrator(
    args: list[str], env: dict[str, str], timeout: float = 60
) -> tuple[int, str, str, float]:
    """`migrator ARGS` as a process: exit code, stdout, stderr and seconds taken."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "workers.main", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def tls_redis(tls_files: TlsFiles, tmp_path: Path) -> Iterator[int]:
    """A redis-server speaking TLS only (the test CA's certificate for 127.0.0.1); its port."""
    port = free_port()
    directory = tmp_path / "tls-redis"
    directory.mkdir()
    process = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server",
         "--port", "0", "--tls-port", str(port), "--bind", LOOPBACK,
         "--tls-cert-file", str(tls_files.server_cert),
         "--tls-key-file", str(tls_files.server_key),
         "--tls-ca-cert-file", str(tls_files.ca_cert), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(directory),
         "--logfile", str(directory / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = _tls_client(port, tls_files)

    def answers() -> bool:
        assert process.poll() is None, (directory / "redis.log").read_text()
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    eventually(answers, timeout=10, what="the TLS redis-server answering")
    yield port
    client.close()
    process.terminate()
    process.wait(timeout=10)


def _tls_client(port: int, tls_files: TlsFiles) -> redis.Redis:
    return redis.Redis(
        host=LOOPBACK, port=port, ssl=True, ssl_ca_certs=str(tls_files.ca_cert), socket_timeout=5
    )


def _enqueue_args(tmp_path: Path, dovecot_port: int, rows: int) -> list[str]:
    pairs = [(f"user{i}@example.test", f"Pw-{i}", f"user{i}@example.test") for i in range(rows)]
    batch = write_source_batch(tmp_path / "batch.csv", f"imaps://127.0.0.1:{dovecot_port}", pairs)
    return ["--method", "individual", "--target-server", f"imaps://127.0.0.1:{dovecot_port}",
            "--target-admin", MASTER_USER, "--batch-id", "b1", str(batch)]  # fmt: skip


def _env(celery_env: dict[str, str], url: str) -> dict[str, str]:
    return {**celery_env, "MIGRATOR_REDIS_URL": url,
            "MIGRATOR_TARGET_ADMIN_PASSWORD": MASTER_PASSWORD}  # fmt: skip


def test_a_rediss_url_without_ssl_cert_reqs_is_refused_before_anything_is_written(
    tls_redis: int,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    tmp_path: Path,
) -> None:
    url = f"rediss://:{URL_PASSWORD}@127.0.0.1:{tls_redis}/0"
    args = ["enqueue", *_enqueue_args(tmp_path, 1, rows=3)]

    code, out, err, seconds = _migrator(args, _env(celery_env, url))

    assert code == 2, err
    assert len(_lines(err)) == 1, err
    assert "ssl_cert_reqs" in err and "Traceback" not in err
    assert URL_PASSWORD not in out + err
    assert seconds < 15
    # Nothing written: no key in Redis, no batch copy on this machine.
    client = _tls_client(tls_redis, tls_files)
    assert client.dbsize() == 0
    client.close()
    assert not list((tmp_path / "state").rglob("*.json"))


def test_a_rediss_url_with_ssl_cert_reqs_enqueues_and_a_worker_copies_over_tls(
    tls_redis: int,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    """The check refuses only what cannot work: the same Redis with ssl_cert_reqs works
    for `enqueue`, `status` and a worker, end to end."""
    password = batch_password("rediss")
    source, target = make_user(password), make_user()
    fill(source, {"INBOX": 30, "Archive": 20}, password, size_hint=3_000)
    url = f"rediss://127.0.0.1:{tls_redis}/0?ssl_cert_reqs=required"
    env = _env(celery_env, url)
    imap = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    batch = write_source_batch(tmp_path / "batch.csv", imap, [(source, password, target)])
    workers.start(env=env)

    code, out, err, _ = _migrator(
        ["enqueue", str(batch), "--method", "individual", "--target-server", imap,
         "--target-admin", MASTER_USER, "--ca-file", str(tls_files.ca_cert)], env,
    )  # fmt: skip

    assert code == 0, err
    batch_id = out.strip().splitlines()[-1]
    store = StateStore.from_url(url)
    (row,) = wait_for(store, batch_id, timeout=120)
    assert row.state is MailboxState.SYNCED, row
    assert _migrator(["status", batch_id], env)[0] == 0
    exactly_once.copied(source, password, target)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never says a word (a hung Redis, a firewall that
    accepts and drops)."""
    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(16)
        yield int(listener.getsockname()[1])


@pytest.mark.parametrize("kind", ["refused", "silent"])
@pytest.mark.parametrize("command", ["status", "resume", "run", "enqueue"])
def test_an_unreachable_redis_is_one_clear_line_within_seconds(
    command: str,
    kind: str,
    silent_port: int,
    celery_env: dict[str, str],
    tmp_path: Path,
) -> None:
    port = silent_port if kind == "silent" else free_port()
    url = f"redis://:{URL_PASSWORD}@127.0.0.1:{port}/0"
    args = {
        "status": ["status", "b1"],
        "resume": ["resume", "b1"],
        "run": ["run", *_enqueue_args(tmp_path, 1, rows=2)],
        "enqueue": ["enqueue", *_enqueue_args(tmp_path, 1, rows=2)],
    }[command]

    code, out, err, seconds = _migrator(args, _env(celery_env, url))

    assert code == 2, err
    assert seconds < 10, f"{seconds:.1f} s"
    assert len(_lines(err)) == 1, err
    assert f"127.0.0.1:{port}" in err and "Traceback" not in err
    assert URL_PASSWORD not in out + err
    assert not list((tmp_path / "state").rglob("*.json"))


@pytest.mark.parametrize("key", ["not-a-fernet-key", ""])
def test_a_worker_without_a_usable_key_refuses_to_start_with_one_clear_line(
    key: str, celery_env: dict[str, str], workers: Workers
) -> None:
    worker = workers.start(env={**celery_env, "MIGRATOR_SECRET_KEY": key})
    try:
        code = worker.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker started with key {key!r}: {worker.log_text()}")
    text = worker.log_text()
    assert code != 0
    assert "MIGRATOR_SECRET_KEY" in text and "Traceback" not in text, text
    assert key not in text or not key


def test_a_task_without_a_usable_key_fails_its_mailbox_with_a_clear_message(
    celery_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a worker runs a task without a usable key after all (started some other way),
    the mailbox ends `failed`, saying why, instead of staying `queued` for ever."""
    from migrator.cli import main
    from workers.tasks import migrate_mailbox

    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
    args = _enqueue_args(tmp_path, 1, rows=1)
    monkeypatch.setattr("migrator.cli._send_tasks", lambda *_args: None)
    assert main(["enqueue", *args]) == 0
    monkeypatch.setenv("MIGRATOR_SECRET_KEY", "not-a-fernet-key")

    migrate_mailbox.apply(args=["b1", "00001"])

    store = StateStore.from_url(os.environ["MIGRATOR_REDIS_URL"])
    row = store.mailbox("b1", "00001")
    assert row is not None
    assert row.state is MailboxState.FAILED, row
    assert "MIGRATOR_SECRET_KEY" in row.last_error

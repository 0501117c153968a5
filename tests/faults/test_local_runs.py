"""`migrator run` on one machine without MIGRATOR_REDIS_URL: commands that meet on the same
state directory, and Ctrl-C.

Each command is a `python -m workers.main` (the `migrator` command) process in a session
of its own, as a shell starts it; Ctrl-C is SIGINT to its whole process group, as a
terminal sends it. The private redis-server is found as an operator would find it: the
process whose --dir is the state directory's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from faultkit import REPO, ExactlyOnce, MailboxPairs
from imapclient import IMAPClient
from redis.backoff import NoBackoff
from redis.retry import Retry
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
)
from servers.proxy import UP, TcpProxy
from support import eventually, imaps, write_source_batch

FOLDERS = {"INBOX": 260, "Archive": 140}
MESSAGES = sum(FOLDERS.values())
# Some 35 messages of the first mailbox: well into its copy, far from its end (5 MB).
INTO_THE_COPY = 500_000


class Command:
    """A `migrator` process in its own session; its output goes to files."""

    def __init__(self, args: list[str], env: dict[str, str], directory: Path, name: str) -> None:
        self.out = directory / f"{name}.out"
        self.err = directory / f"{name}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "workers.main", *args],
                cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True,
            )  # fmt: skip

    def ctrl_c(self) -> None:
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running after {timeout} s: {self.stderr()}") from None

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _redis_servers(state: Path) -> list[tuple[int, int]]:
    """(pid, port) of every live redis-server working under `state` (redis-server changes
    to its --dir, and shows its address in its rewritten command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name, _, rest = (entry / "stat").read_text().partition(" (")[2].rpartition(")")
            cwd = os.readlink(entry / "cwd")
            title = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if name != "redis-server" or rest.split()[0] == "Z" or not cwd.startswith(str(state)):
            continue
        port = re.search(r"127\.0\.0\.1:(\d+)|--port\x00(\d+)", title)
        assert port is not None, title
        found.append((int(entry.name), int(port.group(1) or port.group(2))))
    return found


def _answers(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


class Watcher:
    """Read a mailbox's state from the private Redis every 20 ms, until Redis stops
    answering (or the watcher is stopped); `last` is the state it read last."""

    def __init__(self, port: int, batch_id: str, job_id: str) -> None:
        self.last: str | None = None
        self.gone = threading.Event()
        self._key = f"migrator:mbx:{batch_id}:{job_id}"
        self._client = redis.Redis(
            port=port, socket_timeout=2, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                state = self._client.hget(self._key, "state")
            except redis.RedisError:
                self.gone.set()
                return
            self.last = state.decode() if state else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()


@pytest.fixture
def local_env(tls_files: TlsFiles, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A machine without MIGRATOR_REDIS_URL: `migrator run` keeps its own Redis under the
    state directory. Afterwards, no command and no redis-server of this test is left."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MIGRATOR_REDIS_URL", "MIGRATOR_SECRET_KEY")}  # fmt: skip
    env.update(
        MIGRATOR_STATE_DIR=str(tmp_path / "state"),
        MIGRATOR_TARGET_ADMIN_PASSWORD=MASTER_PASSWORD,
        MIGRATOR_LOCK_TTL="1.5",
        SSL_CERT_FILE=str(tls_files.ca_cert),
        COLUMNS="200",
    )
    yield env
    leftover = _redis_servers(tmp_path / "state")
    for pid, _port in leftover:
        os.kill(pid, signal.SIGKILL)
    assert not leftover, "a private redis-server outlived every command"


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        command.kill()


def _run_args(batch: Path, target_port: int, tls_files: TlsFiles, *extra: str) -> list[str]:
    return ["run", str(batch), "--method", "individual",
            "--target-server", f"imaps://127.0.0.1:{target_port}",
            "--target-admin", MASTER_USER, "--ca-file", str(tls_files.ca_cert),
            "--late-commit-grace", "0.2", *extra]  # fmt: skip


def _held(dovecot: DovecotServer, login: str, ssl_context: ssl.SSLContext) -> int:
    """How many messages the target mailbox holds, over all its folders."""
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as client:
        client.login(login, DEFAULT_USER_PASSWORD)
        total = 0
        for flags, _delim, name in client.list_folders():
            if b"\\Noselect" not in flags:
                total += int(client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"])
        return total


def _status(env: dict[str, str], batch_id: str) -> dict[str, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "workers.main", "status", batch_id, "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {str(m["source_identity"]): m for m in json.loads(done.stdout)["mailboxes"]}


# -- two commands on one state directory -------------------------------------------------


def test_two_runs_and_a_resume_of_one_batch_at_once_copy_each_message_once(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    local_env: dict[str, str],
    commands: list[Command],
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    pairs = mailbox_pairs("twice", FOLDERS, 2, size_hint=8_000)
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), pairs)
    with TcpProxy(dovecot.imaps_port) as proxy:
        # Well into the copy, the target takes 8 s to read the rest of an append (so the
        # first run is still copying, whatever the speed of this machine): meanwhile the
        # same batch is resumed, the same CSV runs again as a batch of its own, and the
        # batch's status is asked for.
        proxy.stall(8.0, after_bytes=INTO_THE_COPY, direction=UP)
        args = _run_args(batch, proxy.port, tls_files, "--workers", "2")
        commands.append(Command([*args, "--batch-id", "b1"], local_env, tmp_path, "run1"))
        eventually(
            lambda: proxy.faults_fired == ["stall"], timeout=120, what="the first run copies"
        )
        commands.append(Command(["resume", "b1"], local_env, tmp_path, "resume"))
        commands.append(Command(args, local_env, tmp_path, "run2"))
        live = _status(local_env, "b1")
        for command in commands:
            assert command.wait(300) == 0, command.stderr()

    assert proxy.faults_fired == ["stall"]
    assert len(live) == 2
    assert any(m["state"] == "running" for m in live.values()), live
    assert any(int(str(m["done_messages"])) > 0 for m in live.values()), live
    assert _redis_servers(tmp_path / "state") == []
    rows = _status(local_env, "b1")
    assert {str(m["state"]) for m in rows.values()} == {"synced"}
    for pair in pairs:
        exactly_once.copied(*pair)


# -- Ctrl-C --------------------------------------------------------------------------------


def _ctrl_c_setup(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    local_env: dict[str, str],
    commands: list[Command],
    tmp_path: Path,
    proxy: TcpProxy,
    stall: float,
    tag: str,
) -> tuple[list[tuple[str, str, str]], Command, int]:
    """Three mailboxes, one at a time, into a target behind `proxy`, which holds an
    append of the first one for `stall` seconds well into its copy; once it does, (the
    pairs, the run, the private Redis's port)."""
    pairs = mailbox_pairs(tag, FOLDERS, 3, size_hint=8_000)
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), pairs)
    proxy.stall(stall, after_bytes=INTO_THE_COPY, direction=UP)
    args = _run_args(batch, proxy.port, tls_files, "--workers", "1",
                     "--connections-per-mailbox", "1", "--batch-id", "b1")  # fmt: skip
    run = Command(args, local_env, tmp_path, "run")
    commands.append(run)
    eventually(lambda: proxy.faults_fired == ["stall"], timeout=120, what="the run copies")
    (server,) = _redis_servers(tmp_path / "state")
    return pairs, run, server[1]


def test_ctrl_c_stops_after_the_batches_in_flight_then_resume_copies_each_message_once(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    local_env: dict[str, str],
    commands: list[Command],
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    with TcpProxy(dovecot.imaps_port) as proxy:
        pairs, run, port = _ctrl_c_setup(
            dovecot, mailbox_pairs, tls_files, local_env, commands, tmp_path, proxy,
            3.0, "ctrl-c",
        )  # fmt: skip
        # The target takes 3 s to read what is in flight: the run must wait for it, and
        # its Redis must live until the mailbox is recorded interrupted.
        watcher = Watcher(port, "b1", "00001")
        run.ctrl_c()
        code = run.wait(60)
        watcher.stop()

        err = run.stderr()
        assert code == 130, err
        assert "Traceback" not in err
        assert re.search(r"^.*`migrator resume b1`.*$", err, re.MULTILINE), err
        assert proxy.faults_fired == ["stall"]
        # Redis answered while the mailbox ran; the command, leaving last, then stopped it
        # (the interruption it recorded before is read back below, from Redis's own file:
        # the watcher, polling every 20 ms, may not see it between the write and the stop).
        assert watcher.gone.is_set() and watcher.last in ("running", "interrupted"), watcher.last
        assert not _answers(port)
        rows = _status(local_env, "b1")
        first, *rest = (rows[source] for source, _p, _t in pairs)
        assert first["state"] == "interrupted", first
        # Everything the target holds was checkpointed: nothing in flight was forgotten.
        assert first["done_messages"] == _held(dovecot, pairs[0][2], ssl_context) < MESSAGES
        assert [m["state"] for m in rest] == ["queued", "queued"]

        resume = Command(["resume", "b1"], local_env, tmp_path, "resume")
        commands.append(resume)
        assert resume.wait(300) == 0, resume.stderr()

    assert {str(m["state"]) for m in _status(local_env, "b1").values()} == {"synced"}
    for pair in pairs:
        exactly_once.copied(*pair)


def test_a_second_ctrl_c_exits_at_once_and_resume_still_copies_each_message_once(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    local_env: dict[str, str],
    commands: list[Command],
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    with TcpProxy(dovecot.imaps_port) as proxy:
        pairs, run, port = _ctrl_c_setup(
            dovecot, mailbox_pairs, tls_files, local_env, commands, tmp_path, proxy,
            300.0, "ctrl-c-twice",  # what is in flight never reaches the target
        )  # fmt: skip
        run.ctrl_c()
        eventually(
            lambda: "again" in run.stderr(), timeout=30, what="the run says a second Ctrl-C quits"
        )
        assert run.process.poll() is None
        second = time.monotonic()
        run.ctrl_c()
        code = run.wait(30)
        took = time.monotonic() - second

        err = run.stderr()
        assert code == 130, err
        assert took < 3, f"{took:.1f} s"
        assert "Traceback" not in err
        assert "`migrator resume b1`" in err, err
        # The private Redis outlives the command that left in a hurry; the next one
        # joins it, and stops it when it is done.
        assert _answers(port)
        resume = Command(["resume", "b1"], local_env, tmp_path, "resume")
        commands.append(resume)
        assert resume.wait(300) == 0, resume.stderr()
        assert not _answers(port)

    assert {str(m["state"]) for m in _status(local_env, "b1").values()} == {"synced"}
    for pair in pairs:
        exactly_once.copied(*pair)

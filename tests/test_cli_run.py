"""`migrator run` on one machine (no MIGRATOR_REDIS_URL), in-process through
`migrator.cli.main`, against the test Dovecot: what it leaves under the state directory."""

from __future__ import annotations

import os
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.certs import TlsFiles
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer, MakeUser
from servers.mailgen import Fill, populate
from support import (
    COLUMNS,
    batch_password,
    counts,
    imaps,
    snapshot,
    write_batch,
    write_source_batch,
)

from migrator.cli import main


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most shells have: files 0644 and directories 0755 unless asked otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_everything_a_run_leaves_under_the_state_directory_is_for_this_user_only(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    tmp_path: Path,
    local_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    usual_umask: None,
) -> None:
    password = batch_password("modes")
    source, target = make_user(password), make_user()
    fill(source, {"INBOX": 5}, password, size_hint=1_000)
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), [(source, password, target)])
    state = local_state
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)

    code = main(
        ["run", str(batch), "--method", "individual", "--target-server", imaps(dovecot),
         "--target-admin", MASTER_USER, "--ca-file", str(tls_files.ca_cert), "--batch-id", "m1"]
    )  # fmt: skip

    assert code == 0
    paths = [state, *state.rglob("*")]
    names = {p.name for p in paths}
    # The private Redis's append-only files and log, the key, the batch's copy.
    assert {"appendonlydir", "redis.log", "secret.key", "m1.json"} <= names, names
    assert any(p.suffix == ".aof" for p in paths)
    wrong = {
        str(p.relative_to(state)): oct(stat.S_IMODE(p.stat().st_mode))
        for p in paths
        if stat.S_IMODE(p.stat().st_mode) != (0o700 if p.is_dir() else 0o600)
    }
    assert not wrong, wrong


def test_a_target_without_an_admin_login_is_reached_with_each_rows_own(
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--target-method individual: a hosting provider's IMAP server, where the operator has
    each mailbox's password and no admin or master login (imapsync's --user2/--password2)."""
    source_password, target_password = batch_password("src-own"), batch_password("tgt-own")
    source, target = make_user(source_password), make_user(target_password)
    populate(
        "127.0.0.1", dovecot.imaps_port, source, source_password, {"INBOX": 4, "Sent": 2},
        ssl_context=ssl_context, size_hint=1_000,
    )  # fmt: skip
    batch = write_batch(
        tmp_path / "batch.csv",
        [{"SourceIdentity": source, "SourceServer": imaps(dovecot), "SourceLoginID": source,
          "SourcePassword": source_password, "TargetIdentity": target,
          "TargetLoginID": target, "TargetPassword": target_password}],
        [*COLUMNS, "TargetLoginID", "TargetPassword"],
    )  # fmt: skip
    for name in ("MIGRATOR_REDIS_URL", "MIGRATOR_SECRET_KEY", "MIGRATOR_TARGET_ADMIN_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIGRATOR_STATE_DIR", str(tmp_path / "state"))

    code = main(
        ["run", str(batch), "--method", "individual", "--target-method", "individual",
         "--target-server", imaps(dovecot), "--ca-file", str(tls_files.ca_cert)]
    )  # fmt: skip

    assert code == 0
    assert counts(snapshot(dovecot, target, target_password, ssl_context)) == {
        "INBOX": 4,
        "Sent": 2,
    }


def test_a_run_whose_batch_file_cannot_be_read_leaves_no_redis_server_running(
    local_state: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `run` starts its private Redis while it reads its command line and batch file.
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
    code = main(
        ["run", str(tmp_path / "missing.csv"), "--method", "individual",
         "--target-server", "imaps://127.0.0.1:1", "--target-admin", MASTER_USER]
    )  # fmt: skip

    assert code != 0
    assert (local_state / "redis" / "redis.log").exists()  # it was started ...
    assert not (local_state / "redis" / "server.json").exists()  # ... and stopped
    assert "ready to exit" in (local_state / "redis" / "redis.log").read_text()

"""`migrator run` on one machine (no MIGRATOR_REDIS_URL), in-process through
`migrator.cli.main`, against the test Dovecot: what it leaves under the state directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers.certs import TlsFiles
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer, MakeUser
from servers.mailgen import Fill
from support import batch_password, imaps, write_source_batch

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

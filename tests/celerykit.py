"""Batches through the `migrator` command and Celery workers, as an operator runs them: the
command in this process, `migrator enqueue` into the test Dovecot or the test EWS server,
and waiting for a batch to get somewhere. The workers themselves are the `workers` fixture
(tests/conftest.py); their environment is `celery_env`."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

from ews_server import EwsServer
from servers.dovecot import MASTER_PASSWORD, MASTER_USER
from support import EWS_ADMIN, EWS_PASSWORD, write_source_batch

from migrator.cli import main
from migrator.state import MailboxStatus, StateStore

# A worker that takes over a killed one's mailbox waits this long for the killed one's
# appends to commit late before it indexes the target.
LATE_COMMIT_GRACE = 0.5


def cli(args: list[str]) -> tuple[int, str]:
    """`migrator ARGS` in this process; the exit code and what it printed on stdout."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(args)
    return code, out.getvalue()


def enqueue(
    tmp_path: Path,
    source_url: str,
    target_url: str,
    ca_file: Path,
    pairs: list[tuple[str, str, str]],
    *extra: str,
    grace: float = LATE_COMMIT_GRACE,
) -> str:
    """`migrator enqueue` of (source, password, target) rows, each source on `source_url`,
    into the test Dovecot at `target_url` through its master user; the batch id."""
    target = ["--target-server", target_url, "--target-method", "proxyauth",
              "--target-admin", MASTER_USER, "--ca-file", str(ca_file)]  # fmt: skip
    return _enqueue(tmp_path, source_url, pairs, MASTER_PASSWORD, grace, *target, *extra)


def enqueue_to_exchange(
    tmp_path: Path,
    ews: EwsServer,
    source_url: str,
    pairs: list[tuple[str, str, str]],
    *extra: str,
    grace: float = LATE_COMMIT_GRACE,
) -> str:
    """`migrator enqueue --target ews` of (source, password, target) rows into the test EWS
    server, its service account impersonating each target; the batch id."""
    target = ["--target", "ews", "--target-server", ews.url, "--impersonate",
              "--target-admin", EWS_ADMIN, "--ews-version", "Exchange2016",
              "--allow-plaintext"]  # fmt: skip
    return _enqueue(tmp_path, source_url, pairs, EWS_PASSWORD, grace, *target, *extra)


def _enqueue(
    tmp_path: Path,
    source_url: str,
    pairs: list[tuple[str, str, str]],
    admin_password: str,
    grace: float,
    *args: str,
) -> str:
    batch = write_source_batch(tmp_path / "batch.csv", source_url, pairs)
    secret = tmp_path / "target-admin.pw"
    secret.write_text(admin_password)
    code, out = cli(
        ["enqueue", str(batch), "--method", "individual", "--target-admin-password-file",
         str(secret), "--late-commit-grace", str(grace), *args]
    )  # fmt: skip
    assert code == 0, out
    return out.strip().splitlines()[-1]


def wait_for(
    store: StateStore,
    batch_id: str,
    until: Callable[[list[MailboxStatus]], bool] | None = None,
    timeout: float = 120,
) -> list[MailboxStatus]:
    """Poll the batch until `until(rows)` (default: every mailbox in a final state)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.mailboxes(batch_id)
        if until is not None and until(rows):
            return rows
        if until is None and rows and all(r.state.final for r in rows):
            return rows
        time.sleep(0.02)
    raise AssertionError(f"batch {batch_id} did not get there: {store.mailboxes(batch_id)}")

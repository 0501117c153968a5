"""`migrator check BATCH.csv`: every row's source and target logged in to before a wave,
against the test Dovecot; each bad row named with why, the good ones passed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from celerykit import cli
from opskit import free_port
from servers.certs import TlsFiles
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer, MakeUser
from servers.mailgen import Fill
from support import batch_password, imaps, source_row, write_batch


def test_check_names_each_row_that_is_not_ready_and_passes_the_good_ones(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    tmp_path: Path,
    local_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = batch_password("check")
    good, wrong, orphan, far = (make_user(password) for _ in range(4))
    fill(good, {"INBOX": 7, "Archive": 3}, password, size_hint=2_000)
    good_target = make_user(quota_bytes=5 * 1024 * 1024)
    closed = f"imaps://127.0.0.1:{free_port()}"  # nothing listens there
    rows = [
        source_row(imaps(dovecot), good, password, good_target),
        source_row(imaps(dovecot), wrong, "not-" + password, make_user()),
        source_row(imaps(dovecot), orphan, password, "nobody-here@example.test"),
        source_row(closed, far, password, make_user()),
    ]
    batch = write_batch(tmp_path / "wave.csv", rows)
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
    args = ["check", str(batch), "--method", "individual", "--target-server", imaps(dovecot),
            "--target-admin", MASTER_USER, "--ca-file", str(tls_files.ca_cert),
            "--timeout", "10"]  # fmt: skip

    code, out = cli([*args, "--json"])

    assert code == 1
    by_line = {r["line"]: r for r in json.loads(out)}
    ok = by_line[2]
    assert ok["ready"] and ok["problems"] == []
    assert ok["messages"] == 10 and ok["size_bytes"] > 10 * 1_000
    assert ok["quota_limit"] == 5 * 1024 * 1024
    (problem,) = by_line[3]["problems"]
    assert problem.startswith("source: ") and "AUTHENTICATIONFAILED" in problem, problem
    (problem,) = by_line[4]["problems"]
    assert problem.startswith("target: ") and "nobody-here@example.test" in problem, problem
    (problem,) = by_line[5]["problems"]
    assert problem.startswith("source: ") and closed.split("//")[1] in problem, problem
    assert "refused" in problem.lower()
    assert "1 rows ready, 3 not ready" in capsys.readouterr().err

    code, table = cli(args)
    assert code == 1
    lines = {line.split("│")[1].strip(): line for line in table.splitlines() if "│" in line}
    assert "ready" in lines["2"] and "NOT READY" not in lines["2"]
    assert all("NOT READY" in lines[n] for n in ("3", "4", "5"))
    assert password not in out + table
    # imapclient's INFO lines ("Connection closed") stay out of the output without -v.
    assert not [r for r in caplog.records if r.name.startswith("imapclient")]

"""`migrator velocity run` and `migrator inventory` against the test Dovecot.

The commands run in-process through the parser `add_velocity_commands` builds, with
a private Redis under tmp_path (MIGRATOR_REDIS_URL unset), as `migrator run` does on
an operator's machine.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import ssl
from pathlib import Path

import pytest
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import Fill, PopulatedMessage
from support import counts, imaps, snapshot, write_source_batch

from migrator.batch import AccessMethod, parse_batch
from migrator.cliargs import TARGET_ADMIN_PASSWORD_ENV
from migrator.connectors.imap.survey import survey_mailbox
from migrator.errors import ConfigError
from migrator.foldermap import default_folder_map
from migrator.model import ConnectOptions
from migrator.velocity.cli import add_velocity_commands

FOLDERS = {"INBOX": 12, "Sent Messages": 6, "Projects/2024": 4}


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="migrator")
    add_velocity_commands(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.fixture
def operator_env(local_state: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv(TARGET_ADMIN_PASSWORD_ENV, MASTER_PASSWORD)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _pilot(
    dovecot: DovecotServer, make_user: MakeUser, fill: Fill, tmp_path: Path, n: int
) -> tuple[Path, list[tuple[str, str, list[PopulatedMessage]]]]:
    pairs = []
    for seed in range(n):
        source, target = make_user(), make_user()
        pairs.append((source, target, fill(source, FOLDERS, seed=seed)))
    batch = write_source_batch(
        tmp_path / "pilot.csv",
        imaps(dovecot),
        [(source, DEFAULT_USER_PASSWORD, target) for source, target, _ in pairs],
    )
    return batch, pairs


def _run_argv(batch: Path, dovecot: DovecotServer, tls_files: TlsFiles, *extra: str) -> list[str]:
    return [
        "velocity",
        "run",
        str(batch),
        "--method",
        "individual",
        "--target-server",
        imaps(dovecot),
        "--target-method",
        "proxyauth",
        "--target-admin",
        MASTER_USER,
        "--ca-file",
        str(tls_files.ca_cert),
        *extra,
    ]


def test_concurrency_curve_recopies_the_whole_pilot_at_each_point(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    operator_env: Path,
) -> None:
    batch, pairs = _pilot(dovecot, make_user, fill, operator_env, 2)
    out = operator_env / "report"
    code = _main(
        _run_argv(
            batch,
            dovecot,
            tls_files,
            "--concurrency",
            "1,2",
            "--i-understand-targets-are-emptied",
            "--report-dir",
            str(out),
        )
    )
    assert code == 0

    data = json.loads((out / "velocity.json").read_text())
    messages = sum(len(sent) for _, _, sent in pairs)
    size = sum(m.size for _, _, sent in pairs for m in sent)
    assert [p["concurrency"] for p in data["points"]] == [1, 2]
    for point in data["points"]:
        assert (point["total"]["messages"], point["total"]["bytes"]) == (messages, size)
        assert point["total"]["wall_seconds"] > 0
        assert point["total"]["gb_per_hour"] > 0
        by_source = {m["source_identity"]: m for m in point["mailboxes"]}
        for source, _, sent in pairs:
            assert by_source[source]["messages"] == len(sent)
            assert by_source[source]["bytes"] == sum(m.size for m in sent)
            assert by_source[source]["state"] == "synced"
        assert sum(s["bytes"] for s in point["throughput"]) == size
    assert [c["concurrency"] for c in data["curve"]] == [1, 2]
    assert data["knee_concurrency"] in (1, None)  # a knee only below the largest tried
    assert data["gb_per_hour_per_session"] > 0

    page = (out / "velocity.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert "<svg" in page and pairs[0][0] in page
    assert (out / "velocity.png").read_bytes().startswith(b"\x89PNG")
    # Emptied before the second point, so each target holds the pilot once, not twice.
    for _, target, sent in pairs:
        view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
        assert sum(counts(view).values()) == len(sent)


def test_one_point_runs_without_emptying_anything(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    operator_env: Path,
) -> None:
    batch, pairs = _pilot(dovecot, make_user, fill, operator_env, 1)
    assert _main(_run_argv(batch, dovecot, tls_files, "--workers", "3")) == 0
    reports = list(operator_env.glob("velocity-*/velocity.json"))
    assert len(reports) == 1
    data = json.loads(reports[0].read_text())
    assert [p["concurrency"] for p in data["points"]] == [3]
    assert data["points"][0]["total"]["messages"] == len(pairs[0][2])


def test_more_than_one_point_needs_consent_to_empty_the_targets(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    operator_env: Path,
) -> None:
    batch, pairs = _pilot(dovecot, make_user, fill, operator_env, 1)
    with pytest.raises(ConfigError, match="--i-understand-targets-are-emptied"):
        _main(_run_argv(batch, dovecot, tls_files, "--repeat", "2"))
    target = pairs[0][1]
    assert counts(snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)) == {}


def test_a_target_that_is_its_own_source_is_never_emptied(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    operator_env: Path,
) -> None:
    source = make_user()
    sent = fill(source, {"INBOX": 3})
    batch = write_source_batch(
        operator_env / "self.csv", imaps(dovecot), [(source, DEFAULT_USER_PASSWORD, "")]
    )
    argv = _run_argv(
        batch, dovecot, tls_files, "--repeat", "2", "--i-understand-targets-are-emptied"
    )
    with pytest.raises(ConfigError, match="also a source mailbox"):
        _main(argv)
    view = snapshot(dovecot, source, DEFAULT_USER_PASSWORD, ssl_context)
    assert sum(counts(view).values()) == len(sent)


# -- inventory ---------------------------------------------------------------------------


def test_inventory_reads_sizes_and_counts_per_target_folder(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    operator_env: Path,
) -> None:
    batch, pairs = _pilot(dovecot, make_user, fill, operator_env, 2)
    output = operator_env / "inventory.csv"
    code = _main(
        [
            "inventory",
            str(batch),
            "--method",
            "individual",
            "--ca-file",
            str(tls_files.ca_cert),
            "--output",
            str(output),
        ]
    )
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(output.read_text())))
    assert [r["Identity"] for r in rows] == [s for s, _, _ in pairs]
    for row, (_, _, sent) in zip(rows, pairs, strict=True):
        assert int(row["SizeBytes"]) == sum(m.size for m in sent)
        assert int(row["Items:Inbox"]) == FOLDERS["INBOX"]
        items = {k: int(v) for k, v in row.items() if k.startswith("Items:")}
        assert sum(items.values()) == len(sent)
        projects = default_folder_map().map(("Projects", "2024")).display()
        assert items[f"Items:{projects}"] == FOLDERS["Projects/2024"]


def test_inventory_with_and_without_status_size_agree(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    source = make_user()
    sent = fill(source, FOLDERS)
    text = "SourceIdentity,SourceServer,SourceLoginID,SourcePassword\r\n"
    text += f"{source},{imaps(dovecot)},{source},{DEFAULT_USER_PASSWORD}\r\n"
    job = parse_batch(text, AccessMethod.INDIVIDUAL).jobs[0]
    options = ConnectOptions(timeout=30, ca_file=str(tls_files.ca_cert))
    folder_map = default_folder_map()
    # RFC 8438 STATUS=SIZE where the server has it; the sum of RFC822.SIZE otherwise.
    with_status = survey_mailbox(job, options, folder_map, use_status_size=True)
    by_fetch = survey_mailbox(job, options, folder_map, use_status_size=False)
    assert with_status == by_fetch
    assert by_fetch.size_bytes == sum(m.size for m in sent)

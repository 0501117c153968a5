"""What an operator reads from the command line: `report` (figures, every skipped message
with why, the event log) as text, JSON and CSV; `status` with totals, rate and whole
errors when piped; `batches`; a reused --batch-id refused unless --replace."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from celerykit import cli
from opskit import big_message
from servers.certs import TlsFiles
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer, MakeUser
from servers.mailgen import Fill
from support import batch_password, imaps, run_in_process, run_options, write_source_batch

from migrator.events import EventKind
from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore


def copy_with_one_refused(
    dovecot: DovecotServer,
    limited_dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    redis_url: str,
    batch_id: str,
) -> tuple[StateStore, MailboxStatus, str, str]:
    password = batch_password("report")
    source = make_user(password)
    target = make_user(server=limited_dovecot)
    fill(source, {"INBOX": 6, "Archive": 3}, password, size_hint=1_500)
    fill.append(source, "INBOX", [big_message(900)], password)
    store = StateStore.from_url(redis_url)
    options = run_options(limited_dovecot, tls_files.ca_cert)
    status = run_in_process(store, batch_id, options, imaps(dovecot), source, password, target)
    return store, status, source, password


def test_report_names_each_skipped_message_and_tells_the_mailboxs_events(
    dovecot: DovecotServer,
    limited_dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    redis_url: str,
    celery_env: dict[str, str],
) -> None:
    _, status, source, password = copy_with_one_refused(
        dovecot, limited_dovecot, make_user, fill, tls_files, redis_url, "rep1"
    )
    assert status.state is MailboxState.SYNCED and status.skipped_messages == 1, status

    code, out = cli(["report", "rep1", "--format", "json"])
    assert code == 0
    (mailbox,) = json.loads(out)["mailboxes"]
    assert mailbox["source"] == source and mailbox["state"] == "synced"
    assert mailbox["done_messages"] == 9 and mailbox["copied_messages"] == 9
    (skipped,) = mailbox["skipped"]
    assert skipped["folder"] == "INBOX" and "[LIMIT]" in skipped["reason"]
    kinds = [e["kind"] for e in mailbox["events"]]
    assert kinds[0] == "start" and kinds[1] == "pass" and kinds[-1] == "end", kinds
    assert "skip" in kinds
    assert mailbox["events"][-1]["data"]["state"] == "synced"
    (first,) = mailbox["passes"]  # when it last synced, and what each pass moved
    assert (first["kind"], first["state"], first["moved"]) == ("copy", "synced", "copy: 9 new")
    assert mailbox["last_sync"] == first["finished"] is not None

    code, text = cli(["report", "rep1", source])
    assert code == 0
    assert f"skipped uid {skipped['uid']} in 'INBOX'" in text and "[LIMIT]" in text
    assert "messages          9 of 10 at the target" in text
    assert "       6  INBOX" in text and "       3  Archive" in text
    assert f"last sync         {first['finished']}" in text
    assert f"  {first['finished']}  synced      copy: 9 new" in text
    assert mailbox["folders"] == {"INBOX": 6, "Archive": 3}
    code, table = cli(["report", "rep1", "--format", "csv"])
    (row,) = list(csv.DictReader(io.StringIO(table)))
    assert (row["source"], row["state"], row["skipped_messages"]) == (source, "synced", "1")
    assert (row["last_sync"], row["pass_count"], row["last_pass"]) == (
        first["finished"],
        "1",
        "copy: 9 new",
    )
    assert password not in out + text + table

    code, _ = cli(["report", "rep1", "nobody@example.test"])
    assert code == 2


def test_status_shows_totals_and_whole_errors_when_piped(
    dovecot: DovecotServer,
    limited_dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    redis_url: str,
    celery_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, status, _, _ = copy_with_one_refused(
        dovecot, limited_dovecot, make_user, fill, tls_files, redis_url, "st1"
    )
    error = "the server said: " + " ".join(f"word{i}" for i in range(60)) + " [END]"
    store.set_state("st1", status.job_id, MailboxState.FAILED, error=error)

    code, out = cli(["status", "st1"])

    assert code == 0
    assert error in out  # one line, whole: not cut at 80 columns
    total = next(line for line in out.splitlines() if " total " in line)
    cells = [cell.strip() for cell in total.split("│")[1:-1]]
    # Line, Source, Target, State, Messages, MB, Left, Skipped, Heartbeat, Synced (the
    # copy pass ended with the mail in), Note.
    assert cells[1:] == [
        "total", "", "1/1 ended", "9/10", "0.0/0.1", "", "1", "", "", "batch ended"
    ]  # fmt: skip
    assert "`migrator report st1` names every skipped message" in out
    code, raw = cli(["status", "st1", "--json"])
    totals = json.loads(raw)["totals"]
    assert totals["skipped_messages"] == 1 and totals["done_messages"] == 9
    assert totals["eta_seconds"] == 0

    code, _ = cli(["status", "nope"])
    assert code == 2
    assert "is not in the Redis at redis://127.0.0.1:" in capsys.readouterr().err


def test_a_reused_batch_id_is_refused_unless_replace_and_batches_lists_them(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    tmp_path: Path,
    celery_env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    password = batch_password("replace")
    source, target = make_user(password), make_user()
    fill(source, {"INBOX": 3}, password, size_hint=1_000)
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), [(source, password, target)])
    secret = tmp_path / "admin.pw"
    secret.write_text(MASTER_PASSWORD)
    args = ["enqueue", str(batch), "--method", "individual", "--target-server", imaps(dovecot),
            "--target-admin", MASTER_USER, "--target-admin-password-file", str(secret),
            "--ca-file", str(tls_files.ca_cert), "--batch-id", "wave1"]  # fmt: skip

    assert cli(args)[0] == 0
    assert cli(args)[0] == 2
    assert "--replace replaces it" in capsys.readouterr().err
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    store.note_event("wave1", "00001", EventKind.START, "x")
    assert cli([*args, "--replace"])[0] == 0
    assert store.events("wave1", "00001") == []  # the old batch's log went with it
    assert cli([*args[:-1], "wave2"])[0] == 0

    code, out = cli(["batches", "--json"])
    listed = {b["batch_id"]: b for b in json.loads(out)}
    assert set(listed) == {"wave1", "wave2"}
    assert listed["wave1"]["states"]["queued"] == 1 and listed["wave1"]["mailboxes"] == 1
    code, out = cli(["batches"])
    assert code == 0 and "wave1" in out and "1 queued" in out

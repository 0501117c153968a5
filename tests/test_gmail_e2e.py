"""Acceptance for Gmail as a source, through `migrator enqueue` and a Celery worker: a
1,000-message Gmail-shaped mailbox (multi-labelled, archived, starred, important, spam and
trash mail) behind the Gmail proxy; every message exactly once under the folder rule (and
once per label with `--gmail-labels copies`), archived mail in Archive, a rerun after
Redis lost everything copying nothing; a 20 MB download cap pausing the mailbox (state
`paused`, its resume time in `status`) and the worker resuming it by itself, nothing lost."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path

import pytest
import redis
from celerykit import enqueue, wait_for
from gmailkit import GmailAccountMaker, copies_folders, expected, gmail_messages, held
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from support import imaps

from migrator.cli import main
from migrator.gmail import Direction
from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore

MB = 2**20


@pytest.mark.parametrize("labels", ["rule", "copies"])
def test_thousand_message_gmail_mailbox_once_each_and_a_rerun_after_redis_loss_copies_none(
    labels: str,
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    account = gmail_account(gmail_messages(1000, seed=10))
    target = make_user()
    wanted = (
        expected(account.messages)
        if labels == "rule"
        else expected(account.messages, copies_folders)
    )
    copies = sum(sum(c.values()) for c in wanted.values())
    workers.start(concurrency=2)
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])

    def run(batch: str) -> MailboxStatus:
        batch_id = enqueue(
            tmp_path / batch, account.proxy.url, imaps(dovecot), tls_files.ca_cert,
            [(account.login, account.password, target)], "--gmail-labels", labels,
        )  # fmt: skip
        (row,) = wait_for(store, batch_id, timeout=300)
        return row

    (tmp_path / "first").mkdir()
    first = run("first")

    assert first.state is MailboxState.SYNCED, first
    assert first.copied_messages == first.total_messages == copies
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted
    archived = [m for m in account.messages if not m.labels]
    assert len(archived) == 100 and sum(wanted["Archive"].values()) == 150  # + Important alone
    if labels == "copies":
        assert copies > 1000  # the multi-labelled ones once per label
    else:
        assert copies == 900  # spam and trash left out

    redis.Redis.from_url(celery_env["MIGRATOR_REDIS_URL"]).flushall()  # every checkpoint
    (tmp_path / "again").mkdir()
    again = run("again")

    assert again.state is MailboxState.SYNCED, again
    assert again.copied_messages == 0
    assert again.done_messages == copies
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted


def test_a_20_mb_cap_pauses_the_mailbox_and_the_worker_resumes_it_with_nothing_lost(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    account = gmail_account(gmail_messages(600, size_hint=40_000, seed=11))
    target = make_user()
    wanted = expected(account.messages)
    messages = sum(sum(c.values()) for c in wanted.values())
    copied_bytes = sum(len(m.raw) for m in account.messages if m.in_all_mail)
    assert copied_bytes > 25 * MB
    window = 30.0  # far longer than reading 20 MB takes, even on a busy machine
    workers.start(concurrency=1)
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    batch_id = enqueue(
        tmp_path, account.proxy.url, imaps(dovecot), tls_files.ca_cert,
        [(account.login, account.password, target)],
        "--gmail-download-cap", "20", "--gmail-cap-window", str(window),
    )  # fmt: skip

    (paused,) = wait_for(store, batch_id, lambda rows: rows[0].state is MailboxState.PAUSED)

    assert paused.resume_at is not None and paused.resume_at > time.time() - window
    assert "download cap (20 MB) reached" in paused.last_error
    assert 0 < paused.done_messages < messages
    meters = store.byte_meters()
    used = sum(
        meters.used(Direction.DOWNLOAD, key.split(":", 3)[3], window)
        for key in store.client.scan_iter("migrator:cap:download:*")
    )
    assert 0 < used <= 20 * MB
    assert main(["status", batch_id, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["mailboxes"]
    assert row["state"] == "paused" and row["resume_at"] == paused.resume_at

    (done,) = wait_for(store, batch_id, timeout=300)  # the worker's own ETA task

    assert done.state is MailboxState.SYNCED, done
    assert done.done_messages == done.total_messages == messages
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted

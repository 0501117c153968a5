"""Gmail's daily caps: the rolling-window meter in Redis (state/dailycaps.py), and a Gmail
mailbox that pauses before its download cap, or when Gmail cuts it off, and goes on
where it stopped, every message once."""

from __future__ import annotations

import ssl
import time
from dataclasses import replace
from pathlib import Path

import pytest
from gmailkit import GmailAccountMaker, expected, gmail_messages, held
from rich.console import Console
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.gmail_proxy import GmailProxy
from servers.mailgen import Fill
from servers.proxy import TcpProxy
from support import (
    CopyMailbox,
    assert_copied_exactly,
    eventually,
    imaps,
    run_in_process,
    run_options,
    write_source_batch,
)

from migrator import mailboxid
from migrator.cli import main
from migrator.display import result_table
from migrator.events import EventKind
from migrator.gmail import Direction, GmailSettings
from migrator.report import MailboxState
from migrator.runner import execute_job
from migrator.secrets import SecretBox, new_key
from migrator.state import StateStore

MB = 2**20


@pytest.fixture
def store(redis_url: str) -> StateStore:
    return StateStore.from_url(redis_url)


def test_the_meter_counts_what_fits_and_says_when_the_rest_will(store: StateStore) -> None:
    meter = store.byte_meters().meter(Direction.DOWNLOAD, "imaps://gmail:993/a", 100, 60.0)
    before = time.time()
    assert meter.reserve([30, 30]) == (2, None)
    allowed, resume = meter.reserve([30, 30, 5])
    assert allowed == 1 and resume is not None  # 90 counted; the next 30 would pass 100
    # It fits once the first reservation (60 bytes) has left the window.
    assert before + 60 - 0.01 <= resume <= time.time() + 60  # Lua prints 14 digits
    assert meter.reserve([5], whole=True) == (1, None)  # 95
    allowed, resume = meter.reserve([3, 3], whole=True)  # all or none: none
    assert allowed == 0 and resume is not None
    assert store.byte_meters().used(Direction.DOWNLOAD, "imaps://gmail:993/a", 60.0) == 95
    other = store.byte_meters().meter(Direction.UPLOAD, "imaps://gmail:993/a", 100, 60.0)
    assert other.reserve([100]) == (1, None)  # each direction and mailbox on its own


def test_a_message_past_the_cap_goes_once_the_window_is_clear(store: StateStore) -> None:
    meter = store.byte_meters().meter(Direction.DOWNLOAD, "m", 100, 0.3)
    assert meter.reserve([500]) == (1, None)  # nothing else counted: it goes
    assert meter.reserve([1])[0] == 0
    eventually(lambda: meter.reserve([1]) == (1, None), what="the window moving on")


def test_a_cut_off_counts_as_the_cap_reached_until_then(store: StateStore) -> None:
    meter = store.byte_meters().meter(Direction.DOWNLOAD, "m", 100, 60.0)
    until = time.time() + 0.5
    meter.reached(until)
    allowed, resume = meter.reserve([1])
    assert allowed == 0 and resume == pytest.approx(until)
    eventually(lambda: meter.reserve([1]) == (1, None), what="the cut-off ending")


def test_a_mailbox_pauses_before_its_download_cap_and_goes_on_with_nothing_lost(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    store: StateStore,
) -> None:
    account = gmail_account(gmail_messages(80, size_hint=20_000, seed=3))
    target = make_user()
    wanted = expected(account.messages)
    total = sum(len(m.raw) for m in account.messages if m.in_all_mail)
    cap = total // 2
    # A window far longer than reading a third of the mailbox takes, even on a busy machine:
    # the cap is met before the first bytes counted leave it.
    window = 10.0
    settings = GmailSettings(download_cap=cap, cap_window=window)

    def copy() -> object:
        return copy_mailbox(
            account.login, target, password=account.password, source_url=account.proxy.url,
            source_settings=settings, fetch_window=10,
        )  # fmt: skip

    first = copy()
    assert first.state is MailboxState.PAUSED, first  # type: ignore[attr-defined]
    assert first.resume_at is not None and first.resume_at > time.time() - 1  # type: ignore[attr-defined]
    assert "download cap" in first.last_error  # type: ignore[attr-defined]
    row = store.mailbox("b1", "00001")
    assert row is not None and row.state is MailboxState.PAUSED
    console = Console(width=300, record=True)
    console.print(result_table([row], "b1"))
    table = console.export_text()
    assert "paused" in table and "resumes " in table and "download" in table
    (end,) = [e for e in store.events("b1", "00001") if e.kind is EventKind.END]
    assert end.data["state"] == "paused" and end.data["resume_at"] == row.resume_at
    # A task before its time (`resume`, a broker delivering twice) leaves it paused.
    assert execute_job(store, "b1", "00001", SecretBox(new_key())) is None
    assert store.mailbox("b1", "00001") == row
    mailbox = _source_mailbox(account.login, account.proxy.port)
    assert store.byte_meters().used(Direction.DOWNLOAD, mailbox, window) <= cap
    partial = held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert 0 < sum(sum(c.values()) for c in partial.values()) < 71
    for folder, digests in partial.items():  # what went, went once, where it belongs
        assert not digests - wanted[folder] and max(digests.values()) == 1
    states = [first.state]  # type: ignore[attr-defined]
    while states[-1] is MailboxState.PAUSED:
        resume_at = store.mailbox("b1", "00001").resume_at  # type: ignore[union-attr]
        assert resume_at is not None
        eventually(lambda at=resume_at: time.time() >= at, timeout=20, what="resume time")
        states.append(copy().state)  # type: ignore[attr-defined]
    assert states[-1] is MailboxState.SYNCED
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted


def test_one_lost_gmail_connection_is_retried_at_once_not_paused_for(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A reset looks the same as Gmail's cut-off to the client (EOF): one alone is retried.
    account = gmail_account(gmail_messages(60, size_hint=20_000, seed=5))
    target = make_user()
    account.proxy.cut_off(after_bytes=600_000)

    result = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        source_settings=GmailSettings(), fetch_window=10,
    )  # fmt: skip

    assert account.proxy.cut_offs == 1
    assert result.state is MailboxState.SYNCED, result
    assert "connection lost; retried" in caplog.text
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == expected(account.messages)


def test_gmail_cutting_the_session_off_pauses_the_mailbox_not_fails_it(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
) -> None:
    account = gmail_account(gmail_messages(60, size_hint=20_000, seed=4))
    target = make_user()
    settings = GmailSettings(cap_window=24.0)  # a cut-off waits 1/24 of it: 1 s
    account.proxy.cut_off(after_bytes=300_000, times=2)  # the retry is cut off too

    first = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        source_settings=settings, fetch_window=10,
    )  # fmt: skip

    assert account.proxy.cut_offs == 2
    assert first.state is MailboxState.PAUSED, first
    assert "cut the session off" in first.last_error
    assert first.resume_at is not None
    eventually(lambda: time.time() >= first.resume_at, timeout=10, what="resume time")  # type: ignore[operator]
    second = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        source_settings=settings, batch_id="b2",
    )  # fmt: skip
    assert second.state is MailboxState.SYNCED, second
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == expected(account.messages)


def _source_mailbox(login: str, port: int) -> str:
    from migrator.batch import parse_server
    from migrator.model import Credentials, MailboxJob
    from migrator.secrets import Secret

    job = MailboxJob(
        line=1,
        source_identity=login,
        source_server=parse_server(f"imaps://127.0.0.1:{port}"),
        source_credentials=Credentials(login, Secret("")),
        source_root_folder=None,
        target_identity=login,
    )
    return mailboxid.source_mailbox(job)


def test_a_gmail_target_pauses_before_its_upload_cap_and_gets_everything_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    ssl_context: ssl.SSLContext,
    store: StateStore,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 40, "Work": 20}, size_hint=20_000)
    total = sum(m.size for m in sent)
    # The target answers as Gmail: its upload cap holds.
    with GmailProxy(dovecot.imap_port, tls_files, target, DEFAULT_USER_PASSWORD) as proxy:
        options = run_options(proxy.port, tls_files.ca_cert, connections_per_mailbox=1)
        spec = replace(
            options.target, settings=GmailSettings(upload_cap=total // 3, cap_window=8.0)
        )
        options = replace(options, target=spec)
        states = []
        for attempt in range(20):
            status = run_in_process(
                store, f"u{attempt}", options, imaps(dovecot), source, DEFAULT_USER_PASSWORD, target
            )
            states.append(status.state)
            if status.state is not MailboxState.PAUSED:
                break
            assert "upload cap" in status.last_error and status.resume_at is not None
            at = status.resume_at
            eventually(lambda at=at: time.time() >= at, timeout=20, what="resume time")
    assert states[0] is MailboxState.PAUSED and states[-1] is MailboxState.SYNCED, states
    assert_copied_exactly(dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context)


def test_migrator_run_waits_out_a_pause_and_ends_done(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    dovecot: DovecotServer,
    tls_files: TlsFiles,
    ssl_context: ssl.SSLContext,
    tmp_path: Path,
    local_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account = gmail_account(gmail_messages(60, size_hint=30_000, seed=6))
    target = make_user()
    batch = write_source_batch(
        tmp_path / "batch.csv", account.proxy.url, [(account.login, account.password, target)]
    )
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)

    code = main(
        ["run", str(batch), "--method", "individual", "--target-server", imaps(dovecot),
         "--target-admin", MASTER_USER, "--ca-file", str(tls_files.ca_cert), "--batch-id", "p1",
         "--gmail-download-cap", "1", "--gmail-cap-window", "8"]
    )  # fmt: skip

    assert code == 0
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == expected(account.messages)
    pauses = [r for r in caplog.records if "download cap (1 MB) reached" in r.getMessage()]
    assert pauses  # it paused on the way, and waited


def test_gmail_starving_the_session_pauses_the_mailbox_not_fails_it(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    store: StateStore,
) -> None:
    account = gmail_account(gmail_messages(60, size_hint=20_000, seed=7))
    target = make_user()
    settings = GmailSettings(cap_window=24.0)  # a cut-off waits 1/24 of it: 1 s
    with TcpProxy(account.proxy.port) as slow:
        # A connection to this mailbox was lost a moment ago (by another worker, say).
        meter = store.byte_meters().meter(
            Direction.DOWNLOAD, _source_mailbox(account.login, slow.port), 10**9, 24.0
        )
        assert meter.lost(600.0) is False
        # Bytes slowed to nothing past 600 kB: the session times out waiting.
        slow.stall(30, after_bytes=600_000, then="drop")
        first = copy_mailbox(
            account.login, target, password=account.password,
            source_url=f"imaps://127.0.0.1:{slow.port}", source_settings=settings,
            fetch_window=10, timeout=2.0,
        )  # fmt: skip
        slow.release()
    assert slow.faults_fired == ["stall"]
    assert first.state is MailboxState.PAUSED, first
    assert "cut the session off" in first.last_error and first.resume_at is not None
    eventually(lambda: time.time() >= first.resume_at, timeout=10, what="resume time")  # type: ignore[operator]
    second = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        source_settings=settings, batch_id="b2",
    )  # fmt: skip
    assert second.state is MailboxState.SYNCED, second
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == expected(account.messages)

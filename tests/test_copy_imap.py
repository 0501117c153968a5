"""IMAP to IMAP through the copier, against the test Dovecot and Redis (no Celery here)."""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from datetime import UTC, datetime

import pytest
from imapclient import IMAPClient
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import Fill, make_message
from support import (
    CopyMailbox,
    assert_copied_exactly,
    counts,
    digest,
    hashes,
    newest_that_fit,
    run_options,
    snapshot,
)

from migrator.connectors.imap import source as imap_source
from migrator.connectors.imap.target import ImapTarget
from migrator.errors import ErrorCode, FolderRefused
from migrator.foldermap import TargetFolder
from migrator.report import MailboxState
from migrator.rewrite import RewriteMaps
from migrator.state import StateStore
from migrator.targets.base import QuotaInfo

FOLDERS = {"INBOX": 40, "Sent Messages": 20, "Spam": 10, "Projects/2024": 15, "Données": 15}


def test_copy_keeps_bytes_flags_dates_and_maps_folders(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, FOLDERS)
    status = copy_mailbox(source, target)

    assert status is not None and status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == len(sent)
    assert_copied_exactly(dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context)


def test_rerun_after_redis_is_lost_copies_nothing_twice(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    redis_url: str,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 30, "Archive": 20})
    copy_mailbox(source, target)
    StateStore.from_url(redis_url).client.flushall()
    status = copy_mailbox(source, target)

    assert status is not None and status.state is MailboxState.SYNCED
    assert status.copied_messages == 0  # everything recognised at the target
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert sum(counts(view).values()) == len(sent)


def test_quota_stop_keeps_the_newest_messages(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 40, "Sent": 30, "Old": 30})
    quota = sum(m.size for m in sent) // 3
    fits = newest_that_fit(sent, quota)
    used = sum(m.size for m in fits)

    status = copy_mailbox(source, target, quotas={target.lower(): quota})

    assert status is not None and status.state is MailboxState.QUOTA_STOPPED
    assert status.done_messages == len(fits)
    assert status.done_bytes == used
    assert status.left_messages == len(sent) - len(fits)
    assert status.done_bytes + status.left_bytes == sum(m.size for m in sent)
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    at_target = Counter(s.sha256 for items in view.values() for s in items)
    assert at_target == Counter(digest(m.raw) for m in fits)


def test_server_over_quota_refusal_stops_the_mailbox(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
) -> None:
    source = make_user()
    target = make_user(quota_bytes=60_000)
    sent = fill(source, {"INBOX": 60})
    status = copy_mailbox(source, target)

    assert status is not None and status.state is MailboxState.QUOTA_STOPPED, status
    assert 0 < status.done_messages < len(sent)
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    newest = sorted(sent, key=lambda m: m.internaldate, reverse=True)[: status.done_messages]
    assert Counter(s.sha256 for s in view["INBOX"]) == Counter(digest(m.raw) for m in newest)


@pytest.mark.parametrize(("since", "until"), [("2022-01-01", None), (None, "2022-01-01")])
def test_date_range_copies_only_mail_inside_it(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    since: str | None,
    until: str | None,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 60})
    lo = datetime.fromisoformat(since).replace(tzinfo=UTC) if since else None
    hi = datetime.fromisoformat(until).replace(tzinfo=UTC) if until else None
    inside = [
        m
        for m in sent
        if (lo is None or m.internaldate >= lo) and (hi is None or m.internaldate < hi)
    ]
    assert 0 < len(inside) < len(sent)
    copy_mailbox(source, target, since=lo, until=hi)
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert hashes(view["INBOX"]) == Counter(digest(m.raw) for m in inside)


def test_rewriting_changes_only_addresses_and_resume_after_redis_loss_sends_nothing_twice(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    redis_url: str,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 30})
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as client:
        client.login(source, DEFAULT_USER_PASSWORD)
        for i in range(5):  # no Message-ID: recognised by the hash of the rewritten header
            raw, when = make_message(100 + i, folder="INBOX", with_message_id=False)
            client.append("INBOX", raw, (), when)
    maps = RewriteMaps(domains={"source.example.test": "target.example.test"})

    status = copy_mailbox(source, target, rewrite=maps)

    assert status is not None and status.state is MailboxState.SYNCED
    assert (status.rewritten_messages, status.rewritten_addresses) == (35, 35)
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    originals = {digest(m.raw): m.raw for m in sent}
    assert len(view["INBOX"]) == 35
    assert not any(s.sha256 in originals for s in view["INBOX"])  # each one was rewritten

    StateStore.from_url(redis_url).client.flushall()
    again = copy_mailbox(source, target, rewrite=maps)

    assert again is not None and again.state is MailboxState.SYNCED
    assert again.copied_messages == 0
    assert len(snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)["INBOX"]) == 35
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as client:
        client.login(target, DEFAULT_USER_PASSWORD)
        client.select_folder("INBOX", readonly=True)
        for data in client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).values():
            body = data[b"BODY[]"]
            assert b"@source.example.test" not in body.split(b"\r\n\r\n", 1)[0]
            assert b"@target.example.test>" in body


def test_imaplib_formats_no_message_body_for_its_debug_log(
    dovecot: DovecotServer,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """imapclient turns imaplib's own debug output on, which formats the repr of every
    FETCH literal (each message body, twice) whether or not anything logs it: on a large
    mailbox that was a quarter of the copier's CPU.  Even with imapclient's loggers at
    DEBUG, no body reaches them."""
    source, target = make_user(), make_user()
    marker = "BODY-MARKER-9d41"
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as client:
        client.login(source, DEFAULT_USER_PASSWORD)
        filler = "x" * 600 + "\r\n"  # imapclient logs a literal's first and last 32 bytes
        for i in range(3):
            body = f"{filler}{marker} {i}\r\n{filler}"
            client.append("INBOX", f"Subject: s{i}\r\nMessage-ID: <m{i}@x>\r\n\r\n{body}".encode())
    caplog.set_level(logging.DEBUG, logger="imapclient")

    status = copy_mailbox(source, target)

    assert status is not None and status.state is MailboxState.SYNCED
    assert status.copied_messages == 3
    assert any(r.name.startswith("imapclient") for r in caplog.records)  # DEBUG was on
    assert marker not in caplog.text


def test_the_target_tells_no_quota_from_a_quota(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles
) -> None:
    """Only a target that says it has no limit lets the copier loosen newest first."""
    options = run_options(dovecot, tls_files.ca_cert)
    free, limited = make_user(), make_user(quota_bytes=10 * 1024 * 1024)
    quotas = {}
    for user in (free, limited):
        target = ImapTarget(
            options.target.server, options.target.credentials(user), user, options.connect
        )
        quotas[user] = target.quota()
        target.close()
    assert quotas[free] == QuotaInfo(limit=None, usage=None, unlimited=True)
    assert quotas[limited] == QuotaInfo(limit=10 * 1024 * 1024, usage=0)


def test_the_target_makes_a_folder_once_and_names_one_it_refuses(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles
) -> None:
    """CREATE and SUBSCRIBE go together; a folder made already is taken as it is, one the
    server refuses is a FolderRefused with the server's code."""
    options = run_options(dovecot, tls_files.ca_cert)
    user = make_user()
    target = ImapTarget(
        options.target.server, options.target.credentials(user), user, options.connect
    )
    try:
        assert target.open_folder(TargetFolder(None, ("Données", "Été"))) == "Données/Été"
        assert target.index("Données/Été") == []
    finally:
        target.close()
    again = ImapTarget(
        options.target.server, options.target.credentials(user), user, options.connect
    )
    try:
        again._existing.discard("Données/Été")  # as if another pass made it meanwhile
        assert again.open_folder(TargetFolder(None, ("Données", "Été"))) == "Données/Été"
        with pytest.raises(FolderRefused) as refused:
            again.open_folder(TargetFolder(None, ("dbox-Mails",)))
        assert refused.value.code is ErrorCode.REFUSED  # [CANNOT]: no code of ours
        assert "reserved name" in str(refused.value)
        assert "Données/Été" in [n for _, _, n in again._client.list_sub_folders()]
    finally:
        again.close()


LARGER = {"INBOX": 180, "Sent Messages": 90, "Archive/2023": 60, "Données": 30}


@pytest.mark.parametrize(
    ("connections", "server_cap", "used"),
    [
        (3, 8, 3),  # three where the server's slots have room
        (4, 2, 2),  # the mailbox holds one slot, one more is free: two
        (1, 8, 1),
    ],
)
def test_a_mailbox_copied_over_several_connections_arrives_whole_and_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    connections: int,
    server_cap: int,
    used: int,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, LARGER)
    with caplog.at_level(logging.INFO, logger="migrator.lanes"):
        status = copy_mailbox(
            source, target,
            connections_per_mailbox=connections, max_connections_per_server=server_cap,
            grouping_window=30,  # twelve windows: enough for four
        )  # fmt: skip

    assert status is not None and status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.copied_messages == len(sent)
    lanes = [r.getMessage() for r in caplog.records if "copying over" in r.getMessage()]
    assert lanes == ([f"copying over {used} connections"] if used > 1 else [])
    # Flags ($Label1 too) and dates kept on every connection.
    assert_copied_exactly(dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert StateStore.from_url(redis_url).client.keys("migrator:conn:*") == []  # slots given back


def test_a_folder_listed_in_several_uid_ranges_arrives_whole_and_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(imap_source, "LISTING_CHUNK", 7)  # 60 messages: nine UID FETCHes
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 60, "Archive": 8})
    status = copy_mailbox(source, target)

    assert status is not None and status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.copied_messages == len(sent)
    assert_copied_exactly(dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context)

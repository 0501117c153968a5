"""POP3 source: Dovecot's POP3 read without deleting, copied newest first into IMAP."""

from __future__ import annotations

import poplib
import ssl
from collections import Counter

import pytest
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import Fill
from support import CopyMailbox, batch_job, digest, newest_that_fit, snapshot

from migrator.batch import AccessMethod
from migrator.connectors.pop3.source import Pop3Source
from migrator.errors import LoginFailed
from migrator.model import AdminLogin, ConnectOptions
from migrator.report import MailboxState
from migrator.secrets import Secret


def _source(
    dovecot: DovecotServer,
    tls_files: TlsFiles,
    login: str,
    password: str,
    *,
    scheme: str = "pop3s",
    method: AccessMethod = AccessMethod.INDIVIDUAL,
    admin: AdminLogin | None = None,
) -> Pop3Source:
    port = dovecot.pop3s_port if scheme == "pop3s" else dovecot.pop3_port
    row = {
        "SourceIdentity": "jdoe@example.test",
        "SourceServer": f"{scheme}://127.0.0.1:{port}",
        "SourceLoginID": login,
        "SourcePassword": password,
    }
    job = batch_job(row, method, admin=admin, protocol="pop3")
    return Pop3Source(job, ConnectOptions(timeout=30, ca_file=str(tls_files.ca_cert)))


@pytest.mark.parametrize("scheme", ["pop3", "pop3s"], ids=["stls", "implicit-tls"])
def test_pop3_lists_the_inbox_over_tls(
    scheme: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user()
    sent = fill(user, {"INBOX": 12})
    source = _source(dovecot, tls_files, user, DEFAULT_USER_PASSWORD, scheme=scheme)
    try:
        (folder,) = source.list_folders()
        refs = source.list_messages(folder)
        assert sorted(r.size for r in refs) == sorted(m.size for m in sent)
        assert {r.message_id for r in refs} == {m.message_id for m in sent}
    finally:
        source.close()


def test_pop3_master_user_and_sasl_authorization_identity_log_in(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user()
    fill(user, {"INBOX": 3})
    manual = _source(
        dovecot, tls_files, f"{user}*{MASTER_USER}", MASTER_PASSWORD, method=AccessMethod.MANUAL
    )
    proxy = _source(
        dovecot,
        tls_files,
        user,
        "",
        method=AccessMethod.PROXYAUTH,
        admin=AdminLogin(MASTER_USER, Secret(MASTER_PASSWORD)),
    )
    for source in (manual, proxy):
        try:
            assert len(source.list_messages(source.list_folders()[0])) == 3
        finally:
            source.close()


def test_pop3_wrong_password_is_login_failed_without_the_password(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles
) -> None:
    user = make_user()
    with pytest.raises(LoginFailed) as refused:
        _source(dovecot, tls_files, user, "Wrong-Pw-91x")
    assert user in str(refused.value) and "Wrong-Pw-91x" not in str(refused.value)


def test_pop3_mailbox_of_500_is_copied_to_imap_inbox_once_and_left_in_place(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 500})
    status = copy_mailbox(source, target, source_kind="pop")
    assert status is not None and status.state is MailboxState.SYNCED, status

    # Run again: nothing new is sent.
    again = copy_mailbox(source, target, source_kind="pop")
    assert again is not None and again.copied_messages == 0

    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert Counter(s.sha256 for s in view["INBOX"]) == Counter(digest(m.raw) for m in sent)
    dates = {digest(m.raw): m.internaldate for m in sent}
    assert all(s.internaldate == dates[s.sha256] for s in view["INBOX"])
    pop = poplib.POP3_SSL("127.0.0.1", dovecot.pop3s_port, context=ssl_context)
    try:
        pop.user(source)
        pop.pass_(DEFAULT_USER_PASSWORD)
        assert pop.stat()[0] == 500  # nothing deleted from the source
    finally:
        pop.quit()


def test_pop3_quota_stop_keeps_the_newest_by_date_header(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
) -> None:
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 60})
    quota = sum(m.size for m in sent) // 2
    fits = newest_that_fit(sent, quota)
    status = copy_mailbox(source, target, source_kind="pop", quotas={target.lower(): quota})
    assert status is not None and status.state is MailboxState.QUOTA_STOPPED
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert Counter(s.sha256 for s in view["INBOX"]) == Counter(digest(m.raw) for m in fits)

"""POP3 into Exchange: the Inbox of a POP3 mailbox lands in the EWS Inbox once, newest first."""

from __future__ import annotations

import ssl
from collections import Counter
from pathlib import Path

from ews_server import EwsServer
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import PopulatedMessage, populate
from support import ews_target_options, newest_that_fit, run_in_process

from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore


def _fill(dovecot: DovecotServer, user: str, ctx: ssl.SSLContext, n: int) -> list[PopulatedMessage]:
    return populate(
        "127.0.0.1",
        dovecot.imaps_port,
        user,
        DEFAULT_USER_PASSWORD,
        {"INBOX": n},
        ssl_context=ctx,
        size_hint=1500,
    )


def _pop_to_ews(
    dovecot: DovecotServer,
    ews: EwsServer,
    ca_file: Path,
    redis_url: str,
    source: str,
    target: str,
    **options: object,
) -> MailboxStatus:
    return run_in_process(
        StateStore.from_url(redis_url),
        "pe",
        ews_target_options(ews.url, ca_file, source_kind="pop", **options),
        f"pop3s://127.0.0.1:{dovecot.pop3s_port}",
        source,
        DEFAULT_USER_PASSWORD,
        target,
    )


def _inbox(ews: EwsServer, smtp: str) -> Counter[bytes]:
    return Counter(item.mime for item in ews.store.messages(smtp, "inbox"))


def test_pop3_mailbox_of_500_lands_in_the_exchange_inbox_once_even_after_redis_loss(
    dovecot: DovecotServer,
    make_user: MakeUser,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = _fill(dovecot, source, ssl_context, 500)

    status = _pop_to_ews(dovecot, ews, tls_files.ca_cert, redis_url, source, target)
    assert status.state is MailboxState.DONE, status
    assert status.done_messages == 500
    assert _inbox(ews, target) == Counter(m.raw for m in sent)

    StateStore.from_url(redis_url).client.flushall()  # checkpoints gone: resume from the target
    again = _pop_to_ews(dovecot, ews, tls_files.ca_cert, redis_url, source, target)
    assert again.state is MailboxState.DONE
    assert again.copied_messages == 0
    assert _inbox(ews, target) == Counter(m.raw for m in sent)


def test_pop3_into_exchange_under_quota_keeps_the_newest_by_date(
    dovecot: DovecotServer,
    make_user: MakeUser,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = _fill(dovecot, source, ssl_context, 80)
    quota = sum(m.size for m in sent) // 3
    fits = newest_that_fit(sent, quota)

    status = _pop_to_ews(
        dovecot, ews, tls_files.ca_cert, redis_url, source, target, quotas={target.lower(): quota}
    )

    assert status.state is MailboxState.QUOTA_STOPPED
    assert _inbox(ews, target) == Counter(m.raw for m in fits)

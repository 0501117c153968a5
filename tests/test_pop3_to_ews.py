"""POP3 into Exchange: the Inbox of a POP3 mailbox lands in the EWS Inbox once, newest first."""

from __future__ import annotations

from collections import Counter

from ews_server import EwsServer
from servers.dovecot import MakeUser
from servers.mailgen import Fill
from support import CopyMailbox, newest_that_fit

from migrator.report import MailboxState
from migrator.state import StateStore


def _inbox(ews: EwsServer, smtp: str) -> Counter[bytes]:
    return Counter(item.mime for item in ews.store.messages(smtp, "inbox"))


def test_pop3_mailbox_of_500_lands_in_the_exchange_inbox_once_even_after_redis_loss(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    redis_url: str,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, {"INBOX": 500}, size_hint=1500)

    status = copy_mailbox(source, target, source_kind="pop", into=ews)
    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == 500
    assert _inbox(ews, target) == Counter(m.raw for m in sent)

    StateStore.from_url(redis_url).client.flushall()  # checkpoints gone: resume from the target
    again = copy_mailbox(source, target, source_kind="pop", into=ews)
    assert again.state is MailboxState.SYNCED
    assert again.copied_messages == 0
    assert _inbox(ews, target) == Counter(m.raw for m in sent)


def test_pop3_into_exchange_under_quota_keeps_the_newest_by_date(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, {"INBOX": 80}, size_hint=1500)
    quota = sum(m.size for m in sent) // 3
    fits = newest_that_fit(sent, quota)

    status = copy_mailbox(
        source, target, source_kind="pop", into=ews, quotas={target.lower(): quota}
    )

    assert status.state is MailboxState.QUOTA_STOPPED
    assert _inbox(ews, target) == Counter(m.raw for m in fits)

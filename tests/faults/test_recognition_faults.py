"""Recognising what the target already holds when the checkpoints cannot say: messages
that share a Message-ID and size, identical twins with other flags and dates, a source
whose sizes are estimates, POP3 messages whose bytes or headers are odd.  Each message
must end at the target exactly once, with its own flags and date."""

from __future__ import annotations

import poplib
import ssl
from collections import Counter
from datetime import UTC, datetime

import pytest
from corpus import corpus_messages
from faultkit import ExactlyOnce, digest, stored
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.lying_imap import SizeLyingImap
from servers.mailgen import Fill
from support import CopyMailbox, batch_password, imaps, snapshot

from migrator.report import MailboxState
from migrator.state import StateStore

JAN_2023 = datetime(2023, 1, 10, 9, 0, tzinfo=UTC)
JAN_2024 = datetime(2024, 1, 10, 9, 0, tzinfo=UTC)


def _resend(relay: str, footer: str, when: datetime) -> bytes:
    """One list message as two relays delivered it: the same Message-ID, the same length,
    other bytes (the relay name and the footer differ, length for length)."""
    return (
        f"Received: from {relay}.lists.example by mx.example.test; "
        f"{when:%a, %d %b %Y %H:%M:%S} +0000\r\n"
        "From: List <list@lists.example>\r\nTo: owner@example.test\r\n"
        "Subject: [list] weekly digest\r\nMessage-ID: <digest-42@lists.example>\r\n"
        f"Date: {when:%a, %d %b %Y %H:%M:%S} +0000\r\n\r\n"
        f"This week on the list.\r\n-- \r\n{footer}\r\n"
    ).encode()


@pytest.mark.parametrize("how", ["redis emptied", "server spelled otherwise"])
def test_two_messages_sharing_message_id_and_size_both_arrive_once_without_checkpoints(
    how: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("twins")
    source, target = make_user(password), make_user()
    older, newer = (
        _resend("relay-a", "footer A", JAN_2023),
        _resend("relay-b", "footer B", JAN_2024),
    )
    assert len(older) == len(newer) and older != newer
    fill.append(source, "INBOX", [(older, (), JAN_2023)], password)
    first = copy_mailbox(source, target, password=password, batch_id="b1")
    assert (first.state, first.copied_messages) == (MailboxState.SYNCED, 1)

    # The resend arrives; then the checkpoints are gone: Redis emptied, or a new batch
    # whose CSV writes the same servers otherwise ("localhost" for "127.0.0.1").
    fill.append(source, "INBOX", [(newer, (), JAN_2024)], password)
    url = None
    if how == "redis emptied":
        StateStore.from_url(redis_url).client.flushall()
    else:
        url = f"imaps://LocalHost:{dovecot.imaps_port}"
    second = copy_mailbox(source, target, password=password, batch_id="b2", source_url=url)

    assert second.state is MailboxState.SYNCED, second
    assert (second.copied_messages, second.done_messages) == (1, 2)
    exactly_once.copied(source, password, target)


def test_identical_twins_with_other_flags_and_dates_each_keep_their_own_after_a_kill(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("flags")
    source, target = make_user(password), make_user()
    twin = _resend("relay-a", "footer A", JAN_2023)  # the same bytes, stored twice
    others = fill(source, {"INBOX": 30}, password)
    fill.append(
        source, "INBOX", [(twin, ("\\Seen",), JAN_2023), (twin, ("\\Flagged",), JAN_2024)], password
    )
    until = datetime(2022, 1, 1, tzinfo=UTC)
    first = copy_mailbox(source, target, password=password, batch_id="b1", until=until)
    assert first.copied_messages == len([m for m in others if m.internaldate < until])

    # What a kill leaves when the older twin went first (four connections deal the order
    # out) and died between its APPEND and its checkpoint: Redis is kept, and the target
    # holds the older twin, with its flags and date, unrecorded.
    fill.append(target, "INBOX", [(twin, ("\\Seen",), JAN_2023)])
    second = copy_mailbox(source, target, password=password, batch_id="b2")

    assert second.state is MailboxState.SYNCED, second

    def shown(login: str, secret: str) -> Counter[tuple[str, frozenset[str], datetime]]:
        return Counter(
            (s.sha256, s.flags, s.internaldate)
            for s in snapshot(dovecot, login, secret, ssl_context)["INBOX"]
        )

    assert shown(target, DEFAULT_USER_PASSWORD) == shown(source, password)
    exactly_once.copied(source, password, target)


def test_a_source_whose_sizes_are_estimates_is_recognised_after_redis_loss(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("sizes")
    source, target = make_user(password), make_user()
    sent = fill(source, {"INBOX": 120, "Sent": 40}, password)
    with SizeLyingImap(dovecot.imaps_port, tls_files) as lying:
        url = imaps(lying.port)
        first = copy_mailbox(source, target, password=password, batch_id="b1", source_url=url)
        assert (first.state, first.copied_messages) == (MailboxState.SYNCED, len(sent))
        assert lying.sizes_rewritten >= len(sent)
        StateStore.from_url(redis_url).client.flushall()
        second = copy_mailbox(source, target, password=password, batch_id="b2", source_url=url)

    assert second.state is MailboxState.SYNCED, second
    assert (second.copied_messages, second.done_messages) == (0, len(sent))
    exactly_once.copied(source, password, target)


def _odd_messages() -> list[bytes]:
    """Real mail POP3 handles badly: no final line break; a header Python's parser stops
    reading at (a line without a colon before the Message-ID and Date); and the corpus."""
    no_final_break = (
        b"From: a@example.org\r\nMessage-ID: <nobreak@example.org>\r\n"
        b"Date: Tue, 3 Sep 2024 10:42:11 +0000\r\n\r\nthe last line has no line break"
    )
    stray_line = (
        b"Received: from mx by pop.example.test; Tue, 3 Sep 2024 10:42:11 +0000\r\n"
        b"Subject: a broken client\r\nX-Mailer: Broken 1.0\r\nthis line has no colon\r\n"
        b"Message-ID: <stray@example.org>\r\nDate: Mon, 2 Sep 2024 09:00:00 +0200\r\n\r\nbody\r\n"
    )
    headers_only = b"From: a@example.org\r\nSubject: all header\r\nMessage-ID: <only@example.org>"
    return [no_final_break, stray_line, headers_only, *(raw for _, raw in corpus_messages())]


def _pop3_view(
    dovecot: DovecotServer, login: str, password: str, context: ssl.SSLContext
) -> list[bytes]:
    """The messages as POP3 delivers them (what a POP3 source can copy): RETR's lines."""
    client = poplib.POP3_SSL("127.0.0.1", dovecot.pop3s_port, context=context)
    try:
        client.user(login)
        client.pass_(password)
        return [
            b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, len(client.list()[1]) + 1)
        ]
    finally:
        client.quit()


def test_pop3_messages_with_odd_endings_and_headers_are_recognised_after_redis_loss(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("pop3")
    source, target = make_user(password), make_user()
    messages = _odd_messages()
    fill.append(
        source, "INBOX",
        [(raw, (), datetime(2020, 1, 1 + n % 28, tzinfo=UTC)) for n, raw in enumerate(messages)],
        password,
    )  # fmt: skip
    first = copy_mailbox(source, target, password=password, batch_id="b1", source_kind="pop")
    assert (first.state, first.copied_messages) == (MailboxState.SYNCED, len(messages))
    StateStore.from_url(redis_url).client.flushall()
    second = copy_mailbox(source, target, password=password, batch_id="b2", source_kind="pop")

    assert second.state is MailboxState.SYNCED, second
    assert (second.copied_messages, second.done_messages) == (0, len(messages))
    expected = {
        "INBOX": Counter(digest(raw) for raw in _pop3_view(dovecot, source, password, ssl_context))
    }
    exactly_once(expected, stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context))

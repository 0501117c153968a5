"""Servers that misbehave: BYE in the middle of a copy, NO [UNAVAILABLE], a folder rebuilt
under a new UIDVALIDITY between runs, and a target that refuses one message."""

from __future__ import annotations

import imaplib
import ssl
import threading
import time

import pytest
from faultkit import (
    ExactlyOnce,
    expected_at_target,
    run_in_process,
    run_options,
    stored,
)
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import Fill, make_message
from support import CopyMailbox, batch_password

from migrator.connectors.imap.connection import imap_errors
from migrator.errors import PermanentError, TransientError
from migrator.report import MailboxState
from migrator.state import StateStore


@pytest.mark.parametrize("side", ["source", "target"])
def test_bye_mid_copy_costs_a_pass_not_a_message(
    side: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    redis_url: str,
    exactly_once: ExactlyOnce,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The source fetches ten messages a round trip and the reader keeps at most 200 KB
    # ahead of the writer (below), so the source is still fetching when the session ends,
    # on every one of the mailbox's connections: the mailbox is large enough that the
    # copy outlasts the kick's way through Dovecot (a copy of 350 messages did not, once
    # copies went pipelined).
    password = batch_password(f"bye-{side}")
    source, target = make_user(password), make_user()
    fill(source, {"INBOX": 700, "Archive": 300}, password, size_hint=8_000)
    store = StateStore.from_url(redis_url)
    kicked: list[int] = []

    def kick_mid_copy() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            row = store.mailbox("bye", "00001")
            if row is not None and row.done_messages >= 40:
                # The administrator disconnects the source user: Dovecot ends the session.
                dovecot.doveadm("kick", source if side == "source" else target)
                kicked.append(row.done_messages)
                return
            time.sleep(0.01)

    kicker = threading.Thread(target=kick_mid_copy)
    kicker.start()
    status = copy_mailbox(
        source, target, password=password, batch_id="bye",
        prefetch_bytes=200_000, grouping_window=30, fetch_window=10,  # four connections
    )  # fmt: skip
    kicker.join()

    assert kicked and kicked[0] < 1000
    assert f"pass 1 ended: {side} mailbox" in caplog.text
    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == 1000
    exactly_once.copied(source, password, target)


# What imaplib/imapclient raise for each server answer, and the kind of error it must become.
# Dovecot says NO [UNAVAILABLE] only when its backend storage fails, which a test cannot cause,
# so the mapping is checked with the exception imaplib would raise.
@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (imaplib.IMAP4.error("SELECT failed: [UNAVAILABLE] Backend down"), TransientError),
        (IMAPClientError("fetch failed: [UNAVAILABLE] Try later"), TransientError),
        (imaplib.IMAP4.error("[INUSE] Mailbox locked"), TransientError),
        (imaplib.IMAP4.abort("command: FETCH => Server shutting down"), TransientError),
        (IMAPClientAbortError("socket error: EOF"), TransientError),
        (imaplib.IMAP4.abort("socket error: EOF"), TransientError),
        (TimeoutError("The read operation timed out"), TransientError),
        (ConnectionResetError(104, "Connection reset by peer"), TransientError),
        (imaplib.IMAP4.error("SELECT failed: [NONEXISTENT] Unknown"), PermanentError),
    ],
)
def test_server_answers_map_to_transient_or_permanent(
    raised: Exception, expected: type[Exception]
) -> None:
    with pytest.raises(expected) as caught, imap_errors("source mailbox a@example.test"):
        raise raised
    assert "source mailbox a@example.test" in str(caught.value)


def _rebuild(
    dovecot: DovecotServer, user: str, password: str, folder: str, ctx: ssl.SSLContext
) -> tuple[int, int]:
    """Delete `folder` and create it again with the same messages in reverse order: a new
    UIDVALIDITY, and each old UID now names another message. (old, new) UIDVALIDITY."""
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ctx) as client:
        client.normalise_times = False
        client.plain_login(user, password)
        old = client.select_folder(folder, readonly=True)[b"UIDVALIDITY"]
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
        client.unselect_folder()
        client.delete_folder(folder)
        client.create_folder(folder)
        for data in reversed(list(fetched.values())):
            flags = [f for f in data[b"FLAGS"] if f.lower() != b"\\recent"]
            client.append(folder, data[b"BODY[]"], flags, data[b"INTERNALDATE"])
        new = client.select_folder(folder, readonly=True)[b"UIDVALIDITY"]
    return int(old), int(new)


def test_folder_rebuilt_with_a_new_uidvalidity_between_runs_is_replanned_not_copied_twice(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("uidvalidity")
    source, target = make_user(password), make_user()
    sent = fill(source, {"INBOX": 60, "Projects": 60}, password)
    half = sum(m.size for m in sent) // 2
    first = copy_mailbox(source, target, password=password, batch_id="first", quotas={target: half})
    assert first.state is MailboxState.QUOTA_STOPPED
    assert 0 < first.done_messages < len(sent)

    old, new = _rebuild(dovecot, source, password, "Projects", ssl_context)
    assert old != new

    second = copy_mailbox(source, target, password=password, batch_id="second")
    assert second.state is MailboxState.SYNCED, second
    assert second.done_messages == second.total_messages == len(sent)
    assert second.copied_messages == len(sent) - first.done_messages
    exactly_once.copied(source, password, target)


def test_target_refusing_one_message_skips_counts_and_names_it_and_the_rest_go_on(
    dovecot: DovecotServer,
    limited_dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("refused")
    source = make_user(password)
    target = make_user(server=limited_dovecot)
    fill(source, {"INBOX": 40}, password, size_hint=3_000)
    big, when = make_message(999, folder="INBOX", size_hint=120_000)
    big = big.replace(b"\r\n\r\n", b"\r\n\r\n" + b"padding line\r\n" * 6000, 1)
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as client:
        client.plain_login(source, password)
        client.append("INBOX", big, (), when)
        client.select_folder("INBOX", readonly=True)
        big_uid = max(client.search("ALL"))
    options, source_url = run_options(
        dovecot.imaps_port, limited_dovecot.imaps_port, tls_files.ca_cert
    )
    store = StateStore.from_url(redis_url)

    status = run_in_process(store, "refused", options, source_url, source, password, target)

    assert status.state is MailboxState.SYNCED, status
    assert status.skipped_messages == 1
    assert status.done_messages == status.total_messages - 1 == 40
    skipped = store.client.hget("migrator:mbx:refused:00001", "skipped")
    assert f'"uid": "{big_uid}"' in skipped and "[LIMIT]" in skipped
    source_view = stored(dovecot, source, password, ssl_context)
    source_view["INBOX"] = [b for b in source_view["INBOX"] if len(b) < 64 * 1024]
    exactly_once(
        expected_at_target(source_view),
        stored(limited_dovecot, target, DEFAULT_USER_PASSWORD, ssl_context),
    )

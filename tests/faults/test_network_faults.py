"""Flaky networks: the connection to the source or the target cut or truncated in the middle
of a literal, a server that stops answering, and an append the target commits after the
copier gave up on it. Each costs one pass, never a message, and never sends one twice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ews_server import EwsServer
from faultkit import ExactlyOnce, MailboxPairs, run_in_process, run_options
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.proxy import DOWN, UP, TcpProxy
from support import batch_password, ews_target_options

from migrator.report import MailboxState
from migrator.state import StateStore

FOLDERS = {"INBOX": 80, "Archive": 40}
TIMEOUT = 2.0  # seconds without a byte before a read gives up
# Past login, listing and indexing, inside the message bodies (20 KB on average).
MID_LITERAL = 300_000


@pytest.fixture
def proxy_to(dovecot: DovecotServer) -> Iterator[dict[str, TcpProxy]]:
    proxies: dict[str, TcpProxy] = {}
    yield proxies
    for proxy in proxies.values():
        proxy.close()


def _copy(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    redis_url: str,
    *,
    source_proxy: TcpProxy | None,
    target_proxy: TcpProxy | None,
    pop: bool = False,
    exactly_once: ExactlyOnce,
    tag: str,
) -> None:
    folders = {"INBOX": 120} if pop else FOLDERS
    ((source, password, target),) = mailbox_pairs(tag, folders, size_hint=8_000)
    source_port = source_proxy.port if source_proxy else dovecot.imaps_port
    target_port = target_proxy.port if target_proxy else dovecot.imaps_port
    options, source_url = run_options(
        source_port, target_port, tls_files.ca_cert, timeout=TIMEOUT,
        **({"source_kind": "pop"} if pop else {}),
    )  # fmt: skip
    if pop:
        source_url = f"pop3s://127.0.0.1:{source_port}"
    store = StateStore.from_url(redis_url)

    status = run_in_process(store, "net", options, source_url, source, password, target)

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == sum(folders.values())
    exactly_once.copied(source, password, target)


@pytest.mark.parametrize("fault", ["drop", "truncate"])
@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_source_connection_cut_mid_literal_costs_a_pass_not_a_message(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
    fault: str,
    protocol: str,
) -> None:
    port = dovecot.imaps_port if protocol == "imap" else dovecot.pop3s_port
    with TcpProxy(port) as proxy:
        if fault == "drop":
            proxy.drop_after_bytes(MID_LITERAL, DOWN)
        else:
            proxy.truncate_after_bytes(MID_LITERAL, DOWN)
        _copy(
            dovecot, mailbox_pairs, tls_files, redis_url,
            source_proxy=proxy, target_proxy=None, pop=protocol == "pop3",
            exactly_once=exactly_once, tag=f"src-{fault}-{protocol}",
        )  # fmt: skip
        assert proxy.faults_fired == [fault]
        assert proxy.connections >= 2  # the next pass connected again


@pytest.mark.parametrize("fault", ["drop", "truncate"])
def test_target_connection_cut_mid_append_literal_costs_a_pass_not_a_message(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
    fault: str,
) -> None:
    with TcpProxy(dovecot.imaps_port) as proxy:
        if fault == "drop":
            proxy.drop_after_bytes(MID_LITERAL, UP)
        else:
            proxy.truncate_after_bytes(MID_LITERAL, UP)
        _copy(
            dovecot, mailbox_pairs, tls_files, redis_url,
            source_proxy=None, target_proxy=proxy,
            exactly_once=exactly_once, tag=f"tgt-{fault}",
        )  # fmt: skip
        assert proxy.faults_fired == [fault]
        assert proxy.connections >= 2


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_stalled_server_times_out_and_the_next_pass_finishes(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
    side: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with TcpProxy(dovecot.imaps_port) as proxy:
        # No byte for longer than the timeout, in the middle of the message bodies: the
        # source stops sending a FETCH, or the target stops taking an APPEND and is reset.
        proxy.stall(
            TIMEOUT * 2.5,
            after_bytes=MID_LITERAL,
            direction=DOWN if side == "source" else UP,
            then="drop",
        )
        _copy(
            dovecot, mailbox_pairs, tls_files, redis_url,
            source_proxy=proxy if side == "source" else None,
            target_proxy=proxy if side == "target" else None,
            exactly_once=exactly_once, tag=f"stall-{side}",
        )  # fmt: skip
        assert proxy.faults_fired == ["stall"]
    assert "pass 1 ended" in caplog.text
    assert "timed out" in caplog.text


# A held APPEND (or CreateItem) reaches the target this long after the copier saw its
# connection reset: by then the next pass, which starts about a second after the reset,
# has indexed the target, unless it waits for late commits first (GRACE, from the reset).
LATE_COMMIT_AFTER = 4.0
GRACE = 7.0


@pytest.mark.parametrize("target_kind", ["imap", "ews"])
def test_an_append_the_target_commits_after_the_client_gave_up_is_not_sent_twice(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
    target_kind: str,
) -> None:
    password = batch_password(f"late-commit-{target_kind}")
    source = make_user(password)
    fill(source, FOLDERS, password, size_hint=8_000)
    with TcpProxy(dovecot.imaps_port if target_kind == "imap" else ews.port) as proxy:
        # A middlebox holds an append batch: the copier sees a reset and cannot know whether
        # the batch took effect; the target commits it later, once the path recovers.
        proxy.hold(after_bytes=MID_LITERAL, deliver_after=LATE_COMMIT_AFTER)
        if target_kind == "imap":
            target = make_user()
            options, source_url = run_options(
                dovecot.imaps_port, proxy.port, tls_files.ca_cert, late_commit_grace=GRACE
            )
        else:
            target = make_ews_mailbox()
            endpoint = f"http://127.0.0.1:{proxy.port}/EWS/Exchange.asmx"
            options = ews_target_options(endpoint, tls_files.ca_cert, late_commit_grace=GRACE)
            source_url = f"imaps://127.0.0.1:{dovecot.imaps_port}"
        store = StateStore.from_url(redis_url)

        status = run_in_process(store, "late", options, source_url, source, password, target)

        assert proxy.delivered.wait(30), "the target never answered the held batch"
    assert proxy.faults_fired == ["hold"]
    assert status.state is MailboxState.SYNCED, status
    exactly_once.copied(source, password, target, ews=ews if target_kind == "ews" else None)
    # The held batch was found at the target, not sent again.
    assert status.copied_messages < status.done_messages == sum(FOLDERS.values())

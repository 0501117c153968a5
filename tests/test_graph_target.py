"""Into Exchange Online through Microsoft Graph, one mailbox in this process: importMime
keeps the MIME whole, read state, flag, keywords and received time follow, folders map to
well-known folders and child folders, a rerun after Redis loss sends nothing, and the
mailbox-full, over-size, missing-mailbox and forbidden cases end as with EWS and IMAP."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import redis
from graph_server import MAIL_ROLE, GraphServer
from graphkit import IMAP_TO_GRAPH_FOLDER, GraphApp, copy_to_graph, new_graph_app
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.oauth_server import OAuthServer
from support import imaps, newest_that_fit

from migrator.report import MailboxState
from migrator.state import StateStore

SMALL_MAILBOX = {"INBOX": 12, "Sent Messages": 4, "Projects/2024": 5, "INBOX/Important": 3}


def _keyword_message(n: int) -> bytes:
    return (
        f"From: a{n}@example.org\r\nTo: b@example.test\r\nSubject: keyword {n}\r\n"
        f"Message-ID: <kw{n}@example.org>\r\nDate: Mon, 3 Jun 2024 10:00:00 +0000\r\n\r\n"
        f"Body {n}\r\n"
    ).encode()


def test_imap_to_graph_keeps_mime_flags_dates_and_folders_and_a_rerun_copies_nothing(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    password = "Src-Pw-graph-1!"
    source, target = make_user(password), make_graph_mailbox()  # type: ignore[operator]
    sent = fill(source, SMALL_MAILBOX, password, size_hint=1200)
    when = datetime(2021, 5, 6, 7, 8, 9, tzinfo=UTC)
    fill.append(source, "INBOX", [(_keyword_message(1), ("\\Seen", "Project-X"), when)], password)
    store = StateStore.from_url(redis_url)

    def copy(batch_id: str) -> object:
        return copy_to_graph(
            store, graph, oauth_server, graph_app, tls_files.ca_cert, imaps(dovecot),
            source, password, target, batch_id=batch_id,
        )  # fmt: skip

    status = copy("g1")

    assert status.state is MailboxState.SYNCED, status  # type: ignore[attr-defined]
    for folder, path in IMAP_TO_GRAPH_FOLDER.items():
        if folder not in SMALL_MAILBOX:
            continue
        stored = graph.store.messages_at(target, path)
        expected = {m.raw: m for m in sent if m.folder == folder}
        extra = [_keyword_message(1)] if folder == "INBOX" else []
        assert Counter(m.mime for m in stored) == Counter([*expected, *extra])
        for message in stored:
            if message.mime in expected:
                source_message = expected[message.mime]
                assert message.received == source_message.internaldate
                assert message.is_read == ("\\Seen" in source_message.flags)
                assert (message.flag_status == "flagged") == ("\\Flagged" in source_message.flags)
                assert not message.is_draft
    (keyword,) = [m for m in graph.store.all_messages(target) if m.mime == _keyword_message(1)]
    assert (keyword.categories, keyword.is_read, keyword.received) == (["Project-X"], True, when)

    redis.Redis.from_url(redis_url).flushall()  # Redis lost: no checkpoint is left
    imported = graph.imported
    again = copy("g2")

    assert again.state is MailboxState.SYNCED, again  # type: ignore[attr-defined]
    assert graph.imported == imported  # every message recognised at the target
    assert len(graph.store.all_messages(target)) == len(sent) + 1


def test_a_full_mailbox_keeps_exactly_the_newest_mail(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    password = "Src-Pw-graph-2!"
    source = make_user(password)
    sent = fill(source, {"INBOX": 30, "Archive": 20}, password, size_hint=3000)
    quota = sum(m.size for m in sent) // 2
    target = make_graph_mailbox(quota_bytes=quota)  # type: ignore[operator]

    status = copy_to_graph(
        StateStore.from_url(redis_url), graph, oauth_server, graph_app, tls_files.ca_cert,
        imaps(dovecot), source, password, target,
    )  # fmt: skip

    assert status.state is MailboxState.QUOTA_STOPPED, status
    kept = Counter(m.mime for m in graph.store.all_messages(target))
    assert kept == Counter(m.raw for m in newest_that_fit(sent, quota))


def test_an_oversized_message_and_one_graph_cannot_convert_are_skipped_and_named(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    password = "Src-Pw-graph-3!"
    source, target = make_user(password), make_graph_mailbox()  # type: ignore[operator]
    sent = fill(source, {"INBOX": 10}, password, size_hint=1000)
    big = _keyword_message(2) + b"x" * 50_000 + b"\r\n"
    garbage = b"no header and no empty line, nothing Exchange can convert"
    fill.append(source, "INBOX", [big, garbage], password)
    graph.max_message_size = 40_000

    store = StateStore.from_url(redis_url)
    status = copy_to_graph(
        store, graph, oauth_server, graph_app, tls_files.ca_cert,
        imaps(dovecot), source, password, target,
    )  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    assert status.skipped_messages == 2
    skipped = json.loads(store.client.hget(f"migrator:mbx:g1:{status.job_id}", "skipped"))
    reasons = [s["reason"] for s in skipped]
    assert any("ErrorMessageSizeExceeded" in r for r in reasons), reasons
    assert any("ErrorMimeContentConversionFailed" in r for r in reasons), reasons
    assert Counter(m.mime for m in graph.store.all_messages(target)) == Counter(m.raw for m in sent)


def test_a_missing_mailbox_and_one_the_app_may_not_open_are_not_ready(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    redis_url: str,
    tmp_path: Path,
) -> None:
    password = "Src-Pw-graph-4!"
    source = make_user(password)
    denied = make_graph_mailbox()  # type: ignore[operator]
    graph.denied.add(denied)
    store = StateStore.from_url(redis_url)
    try:
        for n, target in enumerate(("nobody@example.test", denied)):
            status = copy_to_graph(
                store, graph, oauth_server, graph_app, tls_files.ca_cert, imaps(dovecot),
                source, password, target, batch_id=f"nr{n}",
            )  # fmt: skip
            assert status.state is MailboxState.NOT_READY, status
            assert target in (status.last_error or ""), status
    finally:
        graph.denied.discard(denied)
    fill(source, {"INBOX": 1}, password)
    no_import = new_graph_app(oauth_server, tmp_path, roles=(MAIL_ROLE,))
    target = make_graph_mailbox()  # type: ignore[operator]
    status = copy_to_graph(
        store, graph, oauth_server, no_import, tls_files.ca_cert, imaps(dovecot),
        source, password, target, batch_id="nr-role",
    )  # fmt: skip
    assert status.state is MailboxState.NOT_READY, status
    assert "Mail-Advanced" in status.last_error
    assert graph.store.all_messages(target) == []


def test_an_import_whose_answer_is_lost_is_recognised_not_sent_twice(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    """The connection drops after Graph stored a message (and a 503 comes later): the
    pass ends, the next one finds the copy by its MIME, though its PATCH never came."""
    password = "Src-Pw-graph-5!"
    source, target = make_user(password), make_graph_mailbox()  # type: ignore[operator]
    sent = fill(source, {"INBOX": 30}, password, size_hint=1000)
    graph.faults.drop_connection_once(after_processing=True, where="importMime")
    graph.faults.status_once(503, retry_after=1)

    status = copy_to_graph(
        StateStore.from_url(redis_url), graph, oauth_server, graph_app, tls_files.ca_cert,
        imaps(dovecot), source, password, target,
    )  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    assert graph.faults.injected["drop_after"] == 1 and graph.faults.injected["503"] == 1
    stored = graph.store.all_messages(target)
    assert Counter(m.mime for m in stored) == Counter(m.raw for m in sent)

"""Into Exchange Online through Microsoft Graph with real Celery workers: `migrator enqueue
--target graph`, a worker process reaching the in-process test Graph server over HTTPS
with tokens from the test OAuth server."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import redis
from celerykit import wait_for
from graph_server import GraphServer
from graphkit import IMAP_TO_GRAPH_FOLDER, GraphApp, enqueue_to_graph
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.oauth_server import TOKEN_PATTERN, OAuthServer
from support import imaps

from migrator.report import MailboxState
from migrator.state import StateStore

BIG_MAILBOX = {  # 1,050 messages
    "INBOX": 400,
    "Sent Messages": 200,
    "Spam": 100,
    "Projects/2024": 200,
    "INBOX/Important": 150,
}


def test_a_thousand_messages_from_imap_into_graph_and_a_rerun_after_redis_loss_copies_none(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    password = "Src-Pw-graph-e2e-1!"
    source, target = make_user(password), make_graph_mailbox()  # type: ignore[operator]
    sent = fill(source, BIG_MAILBOX, password, size_hint=1500)
    assert len(sent) >= 1000
    workers.start()
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])

    def run() -> None:
        batch_id = enqueue_to_graph(
            tmp_path, graph, oauth_server, graph_app, imaps(dovecot),
            [(source, password, target)], "--ca-file", str(tls_files.ca_cert),
        )  # fmt: skip
        (status,) = wait_for(store, batch_id, timeout=300)
        assert status.state is MailboxState.SYNCED, status
        assert status.done_messages == status.total_messages == len(sent)

    run()

    for folder, path in IMAP_TO_GRAPH_FOLDER.items():
        stored = graph.store.messages_at(target, path)
        expected = {m.raw: m for m in sent if m.folder == folder}
        assert Counter(m.mime for m in stored) == Counter(m.raw for m in sent if m.folder == folder)
        for message in stored:
            original = expected[message.mime]
            assert message.received == original.internaldate
            assert message.is_read == ("\\Seen" in original.flags)
            assert (message.flag_status == "flagged") == ("\\Flagged" in original.flags)
            assert not message.is_draft
    assert graph.max_in_flight[target] <= 4
    log = (tmp_path / "worker.log").read_bytes()
    assert password.encode() not in log and graph_app.secret_file.read_bytes() not in log
    assert TOKEN_PATTERN.search(log) is None  # no issued token in the worker's log

    imported = graph.imported
    redis.Redis.from_url(celery_env["MIGRATOR_REDIS_URL"]).flushall()  # checkpoints lost
    run()

    assert graph.imported == imported  # recognised by the source key on each copy
    assert len(graph.store.all_messages(target)) == len(sent)


def test_a_throttled_copy_lands_each_message_once_with_at_most_four_requests_in_flight(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    password = "Src-Pw-graph-e2e-2!"
    source, target = make_user(password), make_graph_mailbox()  # type: ignore[operator]
    sent = fill(source, {"INBOX": 120, "Projects/2024": 40}, password, size_hint=1500)
    graph.faults.throttle_every(5, retry_after=1)
    graph.latency = 0.02  # Exchange's own time per request: parallel requests overlap
    workers.start()

    batch_id = enqueue_to_graph(
        tmp_path, graph, oauth_server, graph_app, imaps(dovecot),
        [(source, password, target)], "--ca-file", str(tls_files.ca_cert),
    )  # fmt: skip
    (status,) = wait_for(
        StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"]), batch_id, timeout=300
    )

    assert status.state is MailboxState.SYNCED, status
    assert graph.faults.injected["429"] >= len(sent) // 5
    assert Counter(m.mime for m in graph.store.all_messages(target)) == Counter(m.raw for m in sent)
    assert 1 < graph.max_in_flight[target] <= 4

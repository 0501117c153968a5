"""Out of Exchange Online through Microsoft Graph: `--source-type graph` into Dovecot (in
this process) and into Graph again (through a Celery worker), folders walked recursively,
MIME from /$value, read and flag state carried; forwarding by an inbox messageRule."""

from __future__ import annotations

import json
import ssl
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from celerykit import wait_for
from graph_server import GraphServer
from graphkit import GraphApp, enqueue_to_graph, graph_arguments, graph_settings, seed_graph
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.oauth_server import OAuthServer
from support import assert_copied_exactly, run_in_process, run_options, write_batch

from migrator.batch import parse_server
from migrator.cli import main
from migrator.connectors.graph.source import READ_AHEAD, GraphSource
from migrator.model import Credentials, MailboxJob
from migrator.oauth.tokens import share_tokens
from migrator.plan import MessageRef
from migrator.report import MailboxState
from migrator.secrets import Secret
from migrator.state import StateStore

# Where the seeded folders go in a Graph target (paths from a well-known folder).
SEEDED_TO_GRAPH = {
    "INBOX": ("inbox",),
    "Sent Items": ("sentitems",),
    "INBOX/Projects": ("inbox", "Projects"),
}


def test_graph_to_imap_carries_mime_folders_read_flag_and_dates(
    dovecot: DovecotServer,
    make_user: MakeUser,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    ssl_context: ssl.SSLContext,
    redis_url: str,
) -> None:
    source = make_graph_mailbox()  # type: ignore[operator]
    seeded = seed_graph(graph, source, count=45)
    password = "Tgt-Pw-graph-1!"
    target = make_user(password)
    options = run_options(
        dovecot,
        tls_files.ca_cert,
        source_kind="graph",
        source_settings=graph_settings(graph, oauth_server, graph_app, tls_files.ca_cert),
    )

    status = run_in_process(
        StateStore.from_url(redis_url), "gs1", options, graph.url, source, "", target
    )

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == len(seeded)
    # Sent Items is flagged \\Sent at the source: it goes to the target's Sent folder.
    as_sent = [replace(m, folder="Sent") if m.folder == "Sent Items" else m for m in seeded]
    assert_copied_exactly(dovecot, as_sent, target, password, ssl_context)


def test_graph_to_graph_through_a_celery_worker(
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    source, target = make_graph_mailbox(), make_graph_mailbox()  # type: ignore[operator]
    seeded = seed_graph(graph, source, count=60)
    workers.start()

    batch_id = enqueue_to_graph(
        tmp_path, graph, oauth_server, graph_app, graph.url, [(source, "", target)],
        "--source-type", "graph", "--ca-file", str(tls_files.ca_cert),
    )  # fmt: skip
    (status,) = wait_for(
        StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"]), batch_id, timeout=300
    )

    assert status.state is MailboxState.SYNCED, status
    for folder, path in SEEDED_TO_GRAPH.items():
        stored = graph.store.messages_at(target, path)
        expected = {s.raw: s for s in seeded if s.folder == folder}
        assert Counter(m.mime for m in stored) == Counter(
            s.raw for s in seeded if s.folder == folder
        )
        for message in stored:
            original = expected[message.mime]
            assert message.received == original.internaldate
            assert message.is_read == ("\\Seen" in original.flags)
            assert (message.flag_status == "flagged") == ("\\Flagged" in original.flags)


def test_graph_sources_get_a_redirect_rule_and_remove_deletes_only_ours(
    local_state: Path,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = make_graph_mailbox(), "new.owner@example.net"  # type: ignore[operator]
    box = graph.store.get(source)
    assert box is not None
    users_rule = {"id": "R-user", "displayName": "Mark newsletters read", "sequence": 1,
                  "isEnabled": True, "actions": {"markAsRead": True}}  # fmt: skip
    box.rules["R-user"] = users_rule
    csv = write_batch(
        tmp_path / "graph.csv",
        [{"SourceIdentity": source, "SourceServer": graph.url, "SourceLoginID": source,
          "SourcePassword": "", "TargetIdentity": target}],
    )  # fmt: skip
    args = ["--method", "individual", "--source-type", "graph", "--ca-file",
            str(tls_files.ca_cert), *graph_arguments(oauth_server, graph_app)]  # fmt: skip

    def forwarding(action: str) -> tuple[int, list[dict[str, str]]]:
        capsys.readouterr()
        code = main(["forwarding", action, str(csv), "--json", *args])
        return code, json.loads(capsys.readouterr().out)

    code, rows = forwarding("set")
    assert code == 0, rows
    assert rows[0]["state"] == "set"
    (ours,) = [r for r in box.rules.values() if r["id"] != "R-user"]
    assert ours["displayName"] == f"[migrator] forward to {target}"
    assert ours["actions"]["redirectTo"] == [{"emailAddress": {"address": target}}]
    assert not ours["actions"].get("delete") and not ours["actions"].get("moveToFolder")
    assert forwarding("set")[1][0]["detail"] == "already set"
    assert len(box.rules) == 2

    code, rows = forwarding("remove")
    assert code == 0 and rows[0]["state"] == "removed"
    assert list(box.rules.values()) == [users_rule]
    assert forwarding("status")[1][0]["state"] == "not_set"


@pytest.mark.parametrize("page", [None, 4])
def test_a_later_pass_lists_a_folder_through_messages_delta(
    page: int | None,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Graph pages a delta round by 10 unless asked more: migrator asks 1000 (one page
    # here), or what MIGRATOR_GRAPH_DELTA_PAGE says (4: a round of several pages).
    if page is not None:
        monkeypatch.setenv("MIGRATOR_GRAPH_DELTA_PAGE", str(page))
    address = make_graph_mailbox()  # type: ignore[operator]
    seeded = seed_graph(graph, address, count=45)
    in_inbox = sum(1 for s in seeded if s.folder == "INBOX")
    assert in_inbox > 10
    share_tokens(None)  # no runner here: no Redis of an earlier test's to share tokens in
    job = MailboxJob(1, address, parse_server(graph.url, protocol="graph"),
                     Credentials(address, Secret("")), None, "someone@example.net")  # fmt: skip
    settings = graph_settings(graph, oauth_server, graph_app, tls_files.ca_cert)

    def listing() -> tuple[dict[str, MessageRef], int, int, int]:
        source = GraphSource(job, settings)
        try:
            inbox = next(f for f in source.list_folders() if f.path == ("INBOX",))
            before = len(graph.calls)
            refs = {r.uid: r for r in source.list_messages(inbox)}
            full = sum(1 for c in graph.calls[before:] if c.endswith("/messages"))
            pages = sum(1 for c in graph.calls[before:] if c.endswith("/messages/delta"))
            return refs, full, source.lister.delta_rounds, pages
        finally:
            source.close()

    first, full_reads, rounds, pages = listing()
    assert (full_reads, rounds) == (1, 0)
    assert len(first) == in_inbox
    assert pages == (1 if page is None else -(-in_inbox // page))  # the link's round
    box = graph.store.get(address)
    assert box is not None
    gone, changed = sorted(first)[:2]
    with graph.store.lock:
        box.remove(gone)
        box.messages[changed].is_read = not box.messages[changed].is_read
        box.touch(box.messages[changed])

    second, full_reads, rounds, _ = listing()

    assert (full_reads, rounds) == (0, 1)  # only what changed was read again
    assert set(second) == set(first) - {gone}
    assert ("\\Seen" in second[changed].flags) != ("\\Seen" in first[changed].flags)
    assert [r.internaldate for r in second.values()] == sorted(
        (r.internaldate for r in second.values()), reverse=True
    )


def test_a_window_is_read_a_few_messages_ahead_not_all_at_once(
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
) -> None:
    # However large the window the copier hands over, only a few bodies are asked for
    # (and held) ahead of the one it takes; a reader that lets go asks for no more.
    address = make_graph_mailbox()  # type: ignore[operator]
    seeded = seed_graph(graph, address, count=40)
    share_tokens(None)
    job = MailboxJob(1, address, parse_server(graph.url, protocol="graph"),
                     Credentials(address, Secret("")), None, "someone@example.net")  # fmt: skip
    settings = graph_settings(graph, oauth_server, graph_app, tls_files.ca_cert)
    source = GraphSource(job, settings)
    try:
        refs = [r for f in source.list_folders() for r in source.list_messages(f)]
        assert len(refs) == len(seeded)
        before = len(graph.calls)
        reader = source.fetch(refs)
        taken = [next(reader) for _ in range(3)]
        reader.close()  # type: ignore[attr-defined]  # a generator's
        source.close()  # waits for the requests already started
        asked = sum(1 for c in graph.calls[before:] if c.endswith("/$value"))
        assert [ref for ref, _ in taken] == refs[:3]
        assert 3 <= asked <= 3 + READ_AHEAD
        again = GraphSource(job, settings)
        try:
            everything = list(again.fetch(refs))
        finally:
            again.close()
        assert [ref.uid for ref, _ in everything] == [ref.uid for ref in refs]
    finally:
        source.close()


def test_a_graph_source_mailbox_that_does_not_exist_fails_saying_so(
    dovecot: DovecotServer,
    make_user: MakeUser,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    options = run_options(
        dovecot,
        tls_files.ca_cert,
        source_kind="graph",
        source_settings=graph_settings(graph, oauth_server, graph_app, tls_files.ca_cert),
    )

    status = run_in_process(
        StateStore.from_url(redis_url), "gs-none", options, graph.url,
        "nobody@example.test", "", make_user(),
    )  # fmt: skip

    assert status.state is MailboxState.FAILED, status
    assert "ErrorInvalidUser" in status.last_error and "nobody@example.test" in status.last_error

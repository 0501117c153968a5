"""Incremental sync out of Exchange through real Celery workers: a mailbox copied from the
test EWS server (or the test Graph server) into Dovecot, then new mail in two folders,
flag changes and deletions at the source; `migrator sync`, run by a worker process that
did not run the first pass, reads only what changed (SyncFolderItems from the saved
SyncState, paged; messages/delta from the saved deltaLink), brings exactly that, and
`complete --propagate-deletes` the deletions.  A state the server refuses lists the
folder whole, recognised at the target: nothing copied twice."""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from celerykit import cli, enqueue, wait_for
from ews_server import EwsServer, ews_account
from ewskit import START, raw_message, seed
from exchangelib import EWSDateTime, Message
from graph_server import GraphServer
from graph_server import Message as GraphMessage
from graph_server.store import new_id
from graphkit import GraphApp, graph_arguments, seed_graph
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.oauth_server import OAuthServer
from support import EWS_PASSWORD, digest, imaps, snapshot

from migrator.connectors.ews.changes import SYNC_PAGE_ENV
from migrator.connectors.ews.props import register_properties
from migrator.gmail import label_keyword
from migrator.report import MailboxState
from migrator.state import StateStore

View = dict[str, Counter[tuple[str, bool, bool]]]  # target folder -> (digest, seen, flagged)


@dataclass
class Held:
    """A source message as the test keeps track of it."""

    folder: str  # the Dovecot folder its copy belongs in
    raw: bytes
    seen: bool
    flagged: bool


# Categories given at the Exchange source between passes: keywords at the IMAP target.
CATEGORIES = ["Projekt Ö", "Client_A"]


def _expected(held: list[Held]) -> View:
    view: View = {}
    for h in held:
        view.setdefault(h.folder, Counter())[(digest(h.raw), h.seen, h.flagged)] += 1
    return view


def _target(dovecot: DovecotServer, login: str, context: ssl.SSLContext) -> View:
    view: View = {}
    for name, items in snapshot(dovecot, login, DEFAULT_USER_PASSWORD, context).items():
        if items:
            view[name] = Counter(
                (s.sha256, "\\Seen" in s.flags, "\\Flagged" in s.flags) for s in items
            )
    return view


def _keywords(
    dovecot: DovecotServer, login: str, context: ssl.SSLContext, raw: list[bytes]
) -> list[set[str]]:
    """The keywords of the copies of `raw`, each message's in turn."""
    found = {
        s.sha256: {f for f in s.flags if not f.startswith("\\")}
        for items in snapshot(dovecot, login, DEFAULT_USER_PASSWORD, context).values()
        for s in items
    }
    return [found[digest(r)] for r in raw]


def _sync(store: StateStore, batch_id: str, *args: str) -> dict[str, object]:
    code, out = cli([*args, batch_id])
    assert code == 0, out
    (row,) = store.mailboxes(batch_id)
    assert row.state in (MailboxState.SYNCED, MailboxState.COMPLETED), row
    return store.passes(batch_id, row.job_id)[-1]


def _rename_projects(folders: list[Any]) -> None:
    """The user renames Inbox/Projects to Inbox/Clients (the folder keeps its id)."""
    (folder,) = folders
    folder.name = "Clients"


# -- EWS ---------------------------------------------------------------------------------

EWS_FOLDER = {"inbox": "INBOX", "sentitems": "Sent", "Projects": "INBOX/Projects"}


def _change_exchange(ews: EwsServer, smtp: str, held: list[Held]) -> list[Held]:
    """Ten new messages (Inbox and Projects), eight flag changes, two messages given
    categories, four deletions, made
    through exchangelib as a mail client would; the messages deleted."""
    register_properties()
    account = ews_account(ews, smtp, password=EWS_PASSWORD)
    old = list(held)
    projects = next(f for f in account.inbox.children if f.name == "Projects")
    new = ((account.inbox, "inbox", range(6)), (projects, "Projects", range(6, 10)))
    for folder, name, numbers in new:
        for n in numbers:
            raw, when = raw_message(500 + n), START + timedelta(days=9, hours=n)
            Message(
                account=account,
                folder=folder,
                mime_content=raw,
                is_read=n % 2 == 0,
                migrator_delivery_time=EWSDateTime.from_datetime(when),
            ).save()
            held.append(Held(EWS_FOLDER[name], raw, n % 2 == 0, False))
    box = ews.store[smtp]
    id_of = {i.mime: i.id for i in box.items.values() if i.mime}
    by_folder = {f: [h for h in old if h.folder == f] for f in EWS_FOLDER.values()}
    read = by_folder["INBOX"][:3] + by_folder["Sent"][:2]
    flagged = [h for h in by_folder["INBOX/Projects"] if not h.flagged][:3]
    gone = by_folder["INBOX"][-2:] + by_folder["Sent"][-2:]
    for h in read:
        (item,) = account.fetch(ids=[(id_of[h.raw], None)])
        item.is_read = h.seen = not h.seen
        item.save(update_fields=["is_read"])
    for h in flagged:
        (item,) = account.fetch(ids=[(id_of[h.raw], None)])
        item.migrator_flag_status, h.flagged = 2, True
        item.save(update_fields=["migrator_flag_status"])
    for h in by_folder["INBOX"][3:5]:
        (item,) = account.fetch(ids=[(id_of[h.raw], None)])
        item.categories = CATEGORIES
        item.save(update_fields=["categories"])
    for h in gone:
        (item,) = account.fetch(ids=[(id_of[h.raw], None)])
        item.delete()
        held.remove(h)
    return gone


def test_an_ews_source_syncs_through_sync_folder_items_in_a_new_worker_process(
    dovecot: DovecotServer,
    make_user: MakeUser,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    source, target = make_ews_mailbox(), make_user()
    held = [Held(EWS_FOLDER[s.folder], s.raw, s.is_read, s.flagged) for s in seed(ews, source)]
    paged = {**celery_env, SYNC_PAGE_ENV: "3"}  # several SyncFolderItems pages per folder
    first = workers.start("first", env=paged)
    batch_id = enqueue(
        tmp_path, f"http://127.0.0.1:{ews.port}", imaps(dovecot), tls_files.ca_cert,
        [(source, EWS_PASSWORD, target)],
        "--source-type", "ews", "--source-ews-version", "Exchange2016", "--allow-plaintext",
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    (row,) = wait_for(store, batch_id)
    assert row.state is MailboxState.SYNCED, row
    assert _target(dovecot, target, ssl_context) == _expected(held)

    gone = _change_exchange(ews, source, held)
    _rename_projects([f for f in ews.store[source].folders.values() if f.name == "Projects"])
    for h in held + gone:
        h.folder = h.folder.replace("INBOX/Projects", "INBOX/Clients")
    first.stop()
    second = workers.start("second", env=paged)  # knows nothing but what Redis kept
    before = len(ews.calls)
    moved = _sync(store, batch_id, "sync")

    calls = Counter(ews.calls[before:])
    assert calls["FindItem"] == 0 and calls["SyncFolderItems"] > 7  # 7 mail folders, paged
    assert (moved["new_messages"], moved["flag_changes"], moved["vanished_messages"]) == (
        10,
        10,
        4,
    )
    tagged = [h.raw for h in held if h.folder == "INBOX"][3:5]
    wanted = {label_keyword(c) for c in CATEGORIES}  # Projekt&ANY- Client_5FA
    assert _keywords(dovecot, target, ssl_context, tagged) == [wanted, wanted]
    assert (moved["deleted_messages"], moved["new_folders"], moved["renamed_folders"]) == (0, 0, 1)
    assert _target(dovecot, target, ssl_context) == _expected(held + gone)  # copies kept

    # Exchange forgets the SyncStates: each folder listed whole, recognised, one new copy.
    ews.store[source].sync_states.clear()
    account = ews_account(ews, source, password=EWS_PASSWORD)
    Message(account=account, folder=account.inbox, mime_content=raw_message(900)).save()
    held.append(Held("INBOX", raw_message(900), False, False))
    before = len(ews.calls)
    moved = _sync(store, batch_id, "sync")
    calls = Counter(ews.calls[before:])  # each folder listed whole: SyncFolderItems from none
    assert moved["new_messages"] == 1 and calls["SyncFolderItems"] >= 7 and not calls["FindItem"]
    log = second.log_text()
    assert "'Inbox': its SyncState was refused" in log
    assert not [state for state in ews.store[source].sync_states if state in log]
    assert _target(dovecot, target, ssl_context) == _expected(held + gone)

    moved = _sync(store, batch_id, "complete", "--propagate-deletes")
    assert (moved["new_messages"], moved["deleted_messages"]) == (0, 4)
    assert _target(dovecot, target, ssl_context) == _expected(held)
    ews.assert_no_violations()


# -- Graph -------------------------------------------------------------------------------

GRAPH_FOLDER = {"INBOX": "INBOX", "Sent Items": "Sent", "INBOX/Projects": "INBOX/Projects"}


def _change_graph(graph: GraphServer, address: str, held: list[Held]) -> list[Held]:
    """Seven new messages (Inbox and Projects), six flag changes, three deletions."""
    box = graph.store.get(address)
    assert box is not None
    inbox = box.folder("inbox")
    assert inbox is not None
    (projects,) = [f for f in box.children(inbox.id) if f.name == "Projects"]
    by_raw = {m.mime: m for m in box.messages.values()}
    with graph.store.lock:
        for n in range(7):
            folder, name = (inbox, "INBOX") if n < 4 else (projects, "INBOX/Projects")
            raw = raw_message(700 + n)
            message = GraphMessage(
                new_id("M"), folder.id, raw, received=START + timedelta(days=40, hours=n)
            )
            box.messages[message.id] = message
            box.touch(message)
            held.append(Held(name, raw, False, False))
        old = [h for h in held if h.raw in by_raw]
        changed = old[:6]
        for n, h in enumerate(changed):
            message = by_raw[h.raw]
            if n % 2:
                message.flag_status, h.flagged = "flagged", True
            message.is_read = h.seen = not h.seen
            box.touch(message)
        gone = [h for h in old[6:] if h.folder != "INBOX/Projects"][:3]
        for h in gone:
            box.remove(by_raw[h.raw].id)
            held.remove(h)
    return gone


def test_a_graph_source_syncs_from_the_saved_delta_link_in_a_new_worker_process(
    dovecot: DovecotServer,
    make_user: MakeUser,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: Callable[..., str],
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    source, target = make_graph_mailbox(), make_user()
    held = [
        Held(GRAPH_FOLDER[s.folder], s.raw, "\\Seen" in s.flags, "\\Flagged" in s.flags)
        for s in seed_graph(graph, source, count=30)
    ]
    first = workers.start("first")
    batch_id = enqueue(
        tmp_path, graph.url, imaps(dovecot), tls_files.ca_cert, [(source, "", target)],
        "--source-type", "graph", *graph_arguments(oauth_server, graph_app),
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    (row,) = wait_for(store, batch_id)
    assert row.state is MailboxState.SYNCED, row
    assert _target(dovecot, target, ssl_context) == _expected(held)

    gone = _change_graph(graph, source, held)
    box = graph.store.get(source)
    assert box is not None
    _rename_projects([f for f in box.folders.values() if f.name == "Projects"])
    for h in held + gone:
        h.folder = h.folder.replace("INBOX/Projects", "INBOX/Clients")
    first.stop()
    second = workers.start("second")  # no delta link in its memory: only Redis's
    before = len(graph.calls)
    moved = _sync(store, batch_id, "sync")

    calls = graph.calls[before:]
    assert not [c for c in calls if c.startswith("GET") and c.endswith("/messages")]
    assert len([c for c in calls if c.endswith("/messages/delta")]) >= 3
    assert (moved["new_messages"], moved["flag_changes"], moved["vanished_messages"]) == (
        7,
        6,
        3,
    )
    assert (moved["new_folders"], moved["renamed_folders"]) == (0, 1)
    assert _target(dovecot, target, ssl_context) == _expected(held + gone)

    # The server forgets its delta states: listed whole, recognised, one new copy.
    with graph.store.lock:
        box.forget_delta_states()
        inbox = box.folder("inbox")
        assert inbox is not None
        message = GraphMessage(new_id("M"), inbox.id, raw_message(990), received=START)
        box.messages[message.id] = message
        box.touch(message)
    held.append(Held("INBOX", raw_message(990), False, False))
    moved = _sync(store, batch_id, "sync")
    assert moved["new_messages"] == 1
    log = second.log_text()
    assert "its delta link was refused (410 Gone)" in log and "deltatoken" not in log
    assert _target(dovecot, target, ssl_context) == _expected(held + gone)

    moved = _sync(store, batch_id, "complete", "--propagate-deletes")
    assert (moved["new_messages"], moved["deleted_messages"]) == (0, 3)
    assert _target(dovecot, target, ssl_context) == _expected(held)

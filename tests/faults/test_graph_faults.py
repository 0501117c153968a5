"""Into Microsoft Graph with workers killed mid-copy: a kill can land between an import
and the PATCH that gives the copy its source key, or with imports in flight; each
resumed worker recognises what landed (by the key, or by the MIME read back) and every
message ends up in its folder exactly once."""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path

from celerykit import cli, wait_for
from faultkit import ExactlyOnce, digest
from graph_server import GraphServer
from graphkit import IMAP_TO_GRAPH_FOLDER, GraphApp, enqueue_to_graph
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.oauth_server import OAuthServer
from support import batch_password, imaps

from migrator.report import MailboxState
from migrator.state import StateStore

KILL_SEED = 20_261_204
KILLS = 3


def test_workers_killed_mid_copy_into_graph_then_resumed_land_each_message_once(
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
    exactly_once: ExactlyOnce,
) -> None:
    rng = random.Random(KILL_SEED)
    password = batch_password("graph-kills")
    source, target = make_user(password), make_graph_mailbox()  # type: ignore[operator]
    folders = {"INBOX": 250, "Sent Messages": 100, "Projects/2024": 100}
    sent = fill(source, folders, password, size_hint=3000)
    graph.latency = 0.005  # Exchange's own time per request: kills land mid-import
    workers.start("worker0")
    batch_id = enqueue_to_graph(
        tmp_path, graph, oauth_server, graph_app, imaps(dovecot),
        [(source, password, target)], "--ca-file", str(tls_files.ca_cert),
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])

    for kill in range(KILLS):
        goal = store.mailboxes(batch_id)[0].done_messages + rng.randint(30, 80)
        rows = wait_for(
            store, batch_id, lambda rows, g=goal: rows[0].done_messages >= g or rows[0].state.final
        )
        assert not rows[0].state.final, f"finished before kill {kill + 1}: {rows[0]}"
        time.sleep(rng.uniform(0, 0.03))  # anywhere in a batch: imports, PATCHes, checkpoint
        workers[-1].kill()
        assert cli(["resume", batch_id, "--no-wait"])[0] == 0
        workers.start(f"worker{kill + 1}")

    (row,) = wait_for(store, batch_id, timeout=240)
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == len(sent)
    expected: dict[str, Counter[str]] = {}
    for message in sent:
        path = "/".join(IMAP_TO_GRAPH_FOLDER[message.folder])
        expected.setdefault(path, Counter())[digest(message.raw)] += 1
    held = {
        "/".join(path): [m.mime for m in graph.store.messages_at(target, path)]
        for folder, path in IMAP_TO_GRAPH_FOLDER.items()
        if folder in folders
    }
    exactly_once(expected, held)
    assert graph.max_in_flight[target] <= 4

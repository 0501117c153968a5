"""Incremental passes under faults: a sync pass whose target connection is cut in the middle
of its appends costs a pass, never a message, and its flag changes still arrive."""

from __future__ import annotations

import ssl
from collections import Counter

from faultkit import ExactlyOnce, MailboxPairs, run_options
from imapclient import IMAPClient
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer
from servers.mailgen import Fill
from servers.proxy import UP, TcpProxy
from support import default_map_target, individual_jobs, snapshot, source_row

from migrator.report import MailboxState
from migrator.runner import execute_job
from migrator.secrets import SecretBox, new_key
from migrator.state import StateStore
from migrator.syncstate import PassKind, PassRequest

FOLDERS = {"INBOX": 40, "Archive": 20}
NEW = {"INBOX": 40, "Archive": 30}
TIMEOUT = 2.0
# Past login, listing and indexing of the sync pass, inside the new messages (8 KB each).
MID_APPENDS = 150_000


def _flags(
    server: DovecotServer, login: str, password: str, context: ssl.SSLContext, mapped: bool
) -> dict[str, Counter[tuple[str, frozenset[str]]]]:
    return {
        default_map_target(tuple(name.split("/"))) if mapped else name: Counter(
            (s.sha256, s.flags) for s in items
        )
        for name, items in snapshot(server, login, password, context).items()
        if items
    }


def test_a_sync_pass_cut_mid_append_costs_a_pass_not_a_message(
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    fill: Fill,
    tls_files: TlsFiles,
    ssl_context: ssl.SSLContext,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    ((source, password, target),) = mailbox_pairs("sync-cut", FOLDERS, size_hint=8_000)
    store = StateStore.from_url(redis_url)
    box = SecretBox(new_key())
    with TcpProxy(dovecot.imaps_port) as proxy:
        options, source_url = run_options(
            dovecot.imaps_port, proxy.port, tls_files.ca_cert, timeout=TIMEOUT
        )
        (job,) = individual_jobs([source_row(source_url, source, password, target)], options, box)
        store.create_batch("sc", {}, [job])
        execute_job(store, "sc", job.job_id, box)
        fill(source, NEW, password, size_hint=8_000, seed=9)
        with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
            c.plain_login(source, password)
            c.select_folder("Archive")
            c.add_flags(sorted(c.search("NOT FLAGGED"))[:10], [b"\\Flagged"])
        connections = proxy.connections
        proxy.drop_after_bytes(MID_APPENDS, UP)

        execute_job(store, "sc", job.job_id, box, request=PassRequest(PassKind.SYNC))

        assert proxy.faults_fired == ["drop"]
        assert proxy.connections >= connections + 2  # the next pass connected again
    row = store.mailbox("sc", job.job_id)
    assert row is not None and row.state is MailboxState.SYNCED, row
    moved = store.passes("sc", job.job_id)[-1]
    assert moved["flag_changes"] == 10
    exactly_once.copied(source, password, target)
    assert _flags(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context, False) == _flags(
        dovecot, source, password, ssl_context, True
    )

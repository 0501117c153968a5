"""Incremental sync and cutover through a real Celery worker: a mailbox copied, then
changed at the source (new mail in three folders, flag changes, deletions, a renamed
folder); `migrator sync` brings exactly those changes and nothing else, and `migrator
complete` ends the mailbox `completed`, the deletions propagated and forwarding set."""

from __future__ import annotations

import json
import ssl
from collections import Counter
from pathlib import Path

from celerykit import cli, enqueue, wait_for
from imapclient import IMAPClient
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import Fill
from support import default_map_target, imaps, snapshot

from migrator.forwardjobs import key_of
from migrator.jobs import Job
from migrator.report import MailboxState
from migrator.state import StateStore

FIRST = {"INBOX": 80, "Sent Messages": 40, "Projects": 40, "Archive/2019": 40}
NEW = {"INBOX": 20, "Archive/2019": 10, "Projects": 20}  # 50 new, in three folders
FLAGGED = {"INBOX": 50, "Archive/2019": 30, "Projects": 20}  # 100 flag changes
DELETED = {"INBOX": 10, "Sent Messages": 10}  # 20 deletions
RENAMED = ("Projects", "Clients")


def _view(
    dovecot: DovecotServer, login: str, password: str, context: ssl.SSLContext
) -> dict[str, Counter[tuple[str, frozenset[str]]]]:
    """Every folder's messages as (bytes digest, flags), source folders as the shipped
    folder map names them at the target."""
    found: dict[str, Counter[tuple[str, frozenset[str]]]] = {}
    for name, items in snapshot(dovecot, login, password, context).items():
        if items:
            found[name] = Counter((s.sha256, s.flags) for s in items)
    return found


def _mapped(view: dict[str, Counter[tuple[str, frozenset[str]]]]) -> dict[str, Counter[object]]:
    return {default_map_target(tuple(name.split("/"))): Counter(c) for name, c in view.items()}


def _change_the_source(
    dovecot: DovecotServer, login: str, password: str, context: ssl.SSLContext, fill: Fill
) -> None:
    fill(login, NEW, password, seed=17)
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=context) as client:
        client.plain_login(login, password)
        for folder, count in FLAGGED.items():
            client.select_folder(folder)
            uids = sorted(client.search("ALL"))[:count]  # old messages only: new ones are last
            flags = client.get_flags(uids)
            for n, uid in enumerate(uids):
                seen = b"\\Seen" in flags[uid]
                (client.remove_flags if seen else client.add_flags)([uid], [b"\\Seen"])
                client.add_flags([uid], [b"\\Flagged" if n % 2 else b"$Label1"])
        for folder, count in DELETED.items():
            client.select_folder(folder)
            uids = sorted(client.search("ALL"))[-count - (NEW.get(folder, 0)) :][:count]
            client.delete_messages(uids)
            client.expunge()
        client.rename_folder(*RENAMED)


def test_sync_brings_exactly_the_changes_and_complete_ends_the_wave(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    password = "Src-Pw-sync-4e1!"
    source, target = make_user(password), make_user()
    fill(source, FIRST, password)
    workers.start(concurrency=2)
    url = imaps(dovecot)
    sieve = ["--sieve-port", str(dovecot.sieve_port)]
    batch_id = enqueue(tmp_path, url, url, tls_files.ca_cert, [(source, password, target)], *sieve)
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    (row,) = wait_for(store, batch_id)
    assert row.state is MailboxState.SYNCED, row
    before = _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert before == _mapped(_view(dovecot, source, password, ssl_context))

    _change_the_source(dovecot, source, password, ssl_context, fill)
    gone_copies = _gone(before, _mapped(_view(dovecot, source, password, ssl_context)))

    code, out = cli(["sync", batch_id])
    assert code == 0, out
    (row,) = store.mailboxes(batch_id)
    assert row.state is MailboxState.SYNCED and row.last_sync is not None
    after = _mapped(_view(dovecot, source, password, ssl_context))
    # Exactly the source now, and the copies of the 20 deleted messages kept beside it.
    expected = {name: after.get(name, Counter()) + gone_copies.get(name, Counter())
                for name in after.keys() | gone_copies.keys()}  # fmt: skip
    assert _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == expected
    moved = store.passes(batch_id, row.job_id)[-1]
    assert moved["kind"] == "sync"
    assert (moved["new_messages"], moved["flag_changes"], moved["vanished_messages"]) == (
        50,
        100,
        20,
    )
    assert (moved["deleted_messages"], moved["renamed_folders"], moved["new_folders"]) == (0, 1, 0)

    code, out = cli(["complete", batch_id, "--propagate-deletes", "--forward-after-complete"])
    assert code == 0, out
    (row,) = store.mailboxes(batch_id)
    assert row.state is MailboxState.COMPLETED
    assert _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == after
    moved = store.passes(batch_id, row.job_id)[-1]
    assert (moved["kind"], moved["new_messages"], moved["flag_changes"]) == ("final", 0, 0)
    assert moved["deleted_messages"] == 20
    job = Job.from_json(store.payload(batch_id, row.job_id) or "")
    assert store.forwarding(key_of(job))["state"] == "set"
    # A completed mailbox is never run again; status shows when it last synced.
    code, out = cli(["sync", batch_id])
    assert (code, store.mailboxes(batch_id)[0].state) == (0, MailboxState.COMPLETED)
    code, out = cli(["status", batch_id, "--json"])
    assert code == 0
    (mailbox,) = json.loads(out)["mailboxes"]
    assert mailbox["state"] == "completed" and mailbox["last_sync"]
    assert [p["kind"] for p in mailbox["passes"]] == ["copy", "sync", "final"]


def _gone(
    before: dict[str, Counter[tuple[str, frozenset[str]]]], after: dict[str, Counter[object]]
) -> dict[str, Counter[object]]:
    """The target's copies of the messages deleted at the source (by digest), as they were."""
    present = {digest for c in after.values() for digest, _ in c}
    return {
        name: Counter({k: n for k, n in copies.items() if k[0] not in present})
        for name, copies in before.items()
        if any(k[0] not in present for k in copies)
    }

"""Incremental passes in this process (runner.execute_job, as a task runs it) against the
test Dovecot and Redis: a source without RFC 7162 (UIDNEXT and a UID diff), a folder
rebuilt under a new UIDVALIDITY, a folder new at the source, and `migrator sync --every`
with this machine's pool."""

from __future__ import annotations

import json
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from ews_server import EwsServer
from imapclient import IMAPClient
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import Fill
from support import (
    batch_job,
    default_map_target,
    digest,
    ews_target_options,
    imaps,
    individual_jobs,
    run_options,
    snapshot,
    source_row,
    write_source_batch,
)

from migrator.cli import main
from migrator.connectors.imap.source import ImapSource
from migrator.model import ConnectOptions
from migrator.prepare import RunOptions
from migrator.report import MailboxState
from migrator.runner import execute_job
from migrator.secrets import SecretBox, new_key
from migrator.state import StateStore
from migrator.syncstate import PassKind, PassRequest

# Dovecot's capabilities without RFC 7162 CONDSTORE and QRESYNC.
WITHOUT_MODSEQS = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT THREAD=REFERENCES MULTIAPPEND "
    "UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 ESEARCH SEARCHRES WITHIN "
    "LITERAL+ SPECIAL-USE QUOTA MOVE"
)
PASSWORD = "Src-Pw-incr-9c"


@pytest.fixture(scope="module")
def plain_dovecot(tls_files: TlsFiles) -> Iterator[DovecotServer]:
    """A second Dovecot that offers neither CONDSTORE nor QRESYNC."""
    server = DovecotServer(
        master_users={MASTER_USER: MASTER_PASSWORD}, tls=tls_files, imap_capability=WITHOUT_MODSEQS
    )
    with server:
        yield server


class Mailbox:
    """One source and target pair, its batch, and passes run over it."""

    def __init__(self, store: StateStore, dovecot: DovecotServer, ca: Path, source_url: str,
                 source: str, target: str, options: RunOptions | None = None,
                 batch: str = "s1") -> None:  # fmt: skip
        self.store, self.box, self.batch = store, SecretBox(new_key()), batch
        options = options or run_options(dovecot, ca)
        row = source_row(source_url, source, PASSWORD, target)
        jobs = individual_jobs([row], options, self.box)
        store.create_batch(batch, {}, jobs)
        self.job_id = jobs[0].job_id

    def run(self, kind: PassKind = PassKind.COPY, **request: bool) -> dict[str, object]:
        wanted = PassRequest(kind, **request)
        execute_job(self.store, self.batch, self.job_id, self.box, request=wanted)
        return self.store.passes(self.batch, self.job_id)[-1]

    @property
    def state(self) -> MailboxState:
        row = self.store.mailbox(self.batch, self.job_id)
        assert row is not None
        return row.state


def _view(
    server: DovecotServer, login: str, password: str, context: ssl.SSLContext, *, mapped: bool
) -> dict[str, Counter[tuple[str, frozenset[str]]]]:
    found = {}
    for name, items in snapshot(server, login, password, context).items():
        if items:
            where = default_map_target(tuple(name.split("/"))) if mapped else name
            found[where] = Counter((s.sha256, s.flags) for s in items)
    return found


def test_a_source_without_condstore_syncs_by_uidnext_and_a_uid_diff(
    plain_dovecot: DovecotServer,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = "plain-source@example.test", make_user()
    plain_dovecot.add_user(source, PASSWORD)
    fill(source, {"INBOX": 30, "Archive": 20}, PASSWORD, server=plain_dovecot)
    box = Mailbox(StateStore.from_url(redis_url), dovecot, tls_files.ca_cert, imaps(plain_dovecot),
                  source, target)  # fmt: skip
    assert box.run()["new_messages"] == 50
    fill(source, {"INBOX": 4, "Archive": 3}, PASSWORD, server=plain_dovecot, seed=5)
    with IMAPClient("127.0.0.1", plain_dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        assert not c.has_capability("CONDSTORE")
        c.login(source, PASSWORD)
        c.select_folder("Archive")
        uids = sorted(c.search("NOT FLAGGED"))
        c.add_flags(uids[:6], [b"\\Flagged"])
        c.delete_messages(uids[6:9])
        c.expunge()

    moved = box.run(PassKind.SYNC, propagate_deletes=True)

    assert box.state is MailboxState.SYNCED
    assert (moved["new_messages"], moved["flag_changes"], moved["deleted_messages"]) == (7, 6, 3)
    assert _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context, mapped=False) == _view(
        plain_dovecot, source, PASSWORD, ssl_context, mapped=True
    )
    # Nothing changed since: a pass that moves nothing.
    moved = box.run(PassKind.SYNC, propagate_deletes=True)
    assert (moved["new_messages"], moved["flag_changes"], moved["deleted_messages"]) == (0, 0, 0)


def test_a_folder_rebuilt_under_a_new_uidvalidity_is_relisted_and_nothing_copied_twice(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_user(PASSWORD), make_user()
    sent = fill(source, {"INBOX": 10, "Archive": 12}, PASSWORD)
    box = Mailbox(StateStore.from_url(redis_url), dovecot, tls_files.ca_cert, imaps(dovecot),
                  source, target)  # fmt: skip
    box.run()
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.login(source, PASSWORD)
        before = c.folder_status("Archive", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        c.delete_folder("Archive")
    archive = [(m.raw, m.flags, m.internaldate) for m in sent if m.folder == "Archive"]
    fill.append(source, "Archive", [*archive, *archive[:1]], PASSWORD)  # and one copy more
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.login(source, PASSWORD)
        assert c.folder_status("Archive", ["UIDVALIDITY"])[b"UIDVALIDITY"] != before

    moved = box.run(PassKind.SYNC)

    # The rebuilt folder's 12 messages recognised at the target; the 13th is a second copy.
    assert moved["new_messages"] == 1
    assert _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context, mapped=False) == _view(
        dovecot, source, PASSWORD, ssl_context, mapped=True
    )


def test_a_folder_new_at_the_source_is_copied_whole_and_the_rest_left_alone(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_user(PASSWORD), make_user()
    fill(source, {"INBOX": 10}, PASSWORD)
    box = Mailbox(StateStore.from_url(redis_url), dovecot, tls_files.ca_cert, imaps(dovecot),
                  source, target)  # fmt: skip
    box.run()
    fill(source, {"Later/2026": 6}, PASSWORD, seed=3)

    moved = box.run(PassKind.SYNC)
    final = box.run(PassKind.FINAL)

    assert (moved["new_folders"], moved["new_messages"]) == (1, 6)
    assert (final["new_folders"], final["new_messages"], final["flag_changes"]) == (0, 0, 0)
    assert box.state is MailboxState.COMPLETED
    row = box.store.mailbox("s1", box.job_id)
    assert row is not None and row.done_messages == row.total_messages == 16  # the mailbox's
    assert _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context, mapped=False) == _view(
        dovecot, source, PASSWORD, ssl_context, mapped=True
    )
    # A completed mailbox is never run again.
    execute_job(box.store, box.batch, box.job_id, box.box, request=PassRequest(PassKind.SYNC))
    assert len(box.store.passes(box.batch, box.job_id)) == 3


def test_sync_every_runs_passes_on_this_machine_and_status_shows_the_last_sync(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    tmp_path: Path,
    local_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = make_user(PASSWORD), make_user()
    fill(source, {"INBOX": 5}, PASSWORD)
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), [(source, PASSWORD, target)])
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
    assert main(
        ["run", str(batch), "--method", "individual", "--target-server", imaps(dovecot),
         "--target-admin", MASTER_USER, "--ca-file", str(tls_files.ca_cert), "--batch-id", "e1"]
    ) == 0  # fmt: skip
    fill(source, {"INBOX": 2}, PASSWORD, seed=8)

    assert main(["sync", "e1", "--every", "1s", "--times", "2"]) == 0
    assert "next sync in 1 s" in capsys.readouterr().err
    assert main(["status", "e1", "--json"]) == 0

    (mailbox,) = json.loads(capsys.readouterr().out)["mailboxes"]
    assert mailbox["state"] == "synced" and mailbox["last_sync"]
    passes = [(p["kind"], p["new_messages"]) for p in mailbox["passes"]]
    assert passes == [("copy", 5), ("sync", 2), ("sync", 0)]
    with pytest.raises(SystemExit):
        main(["sync", "e1", "--every", "0s"])  # argparse: at least 1 s


def test_an_ews_target_gets_the_new_mail_the_flags_and_the_deletions(
    dovecot: DovecotServer,
    make_user: MakeUser,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_user(PASSWORD), make_ews_mailbox()
    fill(source, {"INBOX": 20}, PASSWORD)
    options = ews_target_options(ews.url, tls_files.ca_cert)
    box = Mailbox(StateStore.from_url(redis_url), dovecot, tls_files.ca_cert, imaps(dovecot),
                  source, target, options)  # fmt: skip
    box.run()
    fill(source, {"INBOX": 3}, PASSWORD, seed=4)
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.login(source, PASSWORD)
        c.select_folder("INBOX")
        uids = sorted(c.search("ALL"))
        flags = c.get_flags(uids[:8])
        for uid in uids[:5]:
            seen = b"\\Seen" in flags[uid]
            (c.remove_flags if seen else c.add_flags)([uid], [b"\\Seen"])
        for uid in uids[5:8]:
            (c.remove_flags if b"\\Flagged" in flags[uid] else c.add_flags)([uid], [b"\\Flagged"])
        c.delete_messages(uids[8:10])
        c.expunge()
        now = c.fetch(c.search("ALL"), ["BODY.PEEK[]", "FLAGS"])

    moved = box.run(PassKind.SYNC, propagate_deletes=True)

    assert (moved["new_messages"], moved["flag_changes"], moved["deleted_messages"]) == (3, 8, 2)
    stored = ews.store.items_at(target, ("inbox",))
    assert Counter(i.mime for i in stored) == Counter(d[b"BODY[]"] for d in now.values())
    items = {i.mime: i for i in stored}
    for data in now.values():
        item, flags = items[data[b"BODY[]"]], data[b"FLAGS"]
        assert item.is_read == (b"\\Seen" in flags)
        prop = item.extended.get((("PropertyTag", hex(0x1090)),))
        status = prop.findtext(f"{T}Value") if prop is not None else None
        assert (status == "2") == (b"\\Flagged" in flags)


T = "{http://schemas.microsoft.com/exchange/services/2006/types}"


def test_propagate_deletes_removes_only_the_copies_we_put_there(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_user(PASSWORD), make_user()
    sent = fill(source, {"INBOX": 10}, PASSWORD)
    # Two of them reached the target by another route before the first pass: recognised
    # there, not ours.
    found = sorted(sent, key=lambda m: m.internaldate)[:2]
    fill.append(target, "INBOX", [(m.raw, m.flags, m.internaldate) for m in found])
    box = Mailbox(StateStore.from_url(redis_url), dovecot, tls_files.ca_cert, imaps(dovecot),
                  source, target)  # fmt: skip
    assert box.run()["new_messages"] == 8
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.login(source, PASSWORD)
        c.select_folder("INBOX")
        c.delete_messages(c.search("ALL"))  # every message, ours and the two found
        c.expunge()

    moved = box.run(PassKind.SYNC, propagate_deletes=True)

    assert (moved["vanished_messages"], moved["deleted_messages"]) == (10, 8)
    left = _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context, mapped=False)
    assert sorted(k for k, _flags in left["INBOX"]) == sorted(digest(m.raw) for m in found)


def test_a_whole_pass_over_a_copied_mailbox_brings_its_flag_changes_too(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    """A second batch over the same mailboxes (a whole pass) gives the copies their flags
    and moves the folder states on: the sync after it has nothing left to bring."""
    source, target = make_user(PASSWORD), make_user()
    fill(source, {"INBOX": 12}, PASSWORD)
    store = StateStore.from_url(redis_url)
    args = (store, dovecot, tls_files.ca_cert, imaps(dovecot), source, target)
    Mailbox(*args).run()
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.login(source, PASSWORD)
        c.select_folder("INBOX")
        c.add_flags(sorted(c.search("NOT FLAGGED"))[:4], [b"\\Flagged"])

    second = Mailbox(*args, batch="s2")
    moved = second.run()
    after = second.run(PassKind.SYNC)

    assert (moved["kind"], moved["new_messages"], moved["flag_changes"]) == ("copy", 0, 4)
    assert (after["new_messages"], after["flag_changes"]) == (0, 0)
    assert _view(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context, mapped=False) == _view(
        dovecot, source, PASSWORD, ssl_context, mapped=True
    )


def test_folders_that_did_not_move_are_not_selected_again(
    dovecot: DovecotServer, make_user: MakeUser, fill: Fill, tls_files: TlsFiles
) -> None:
    """RFC 5819 LIST-STATUS gives every folder's state in one command: a folder whose
    UIDVALIDITY, UIDNEXT and HIGHESTMODSEQ did not move is not selected (its changes are
    its old state itself); the others are read, names with spaces and accents alike."""
    source = make_user(PASSWORD)
    fill(source, {"INBOX": 3, "Données/Été": 2, "Sent Messages": 2}, PASSWORD)
    job = batch_job(source_row(imaps(dovecot), source, PASSWORD, "t@example.test"))
    options = ConnectOptions(ca_file=str(tls_files.ca_cert))
    first = ImapSource(job, options)
    try:
        folders = first.list_folders()
        for folder in folders:
            first.list_messages(folder)
        states = {f.name: first.listed_state(f.name) for f in folders}
    finally:
        first.close()
    fill(source, {"Sent Messages": 1, "Données/Été": 1}, PASSWORD, seed=2)

    second = ImapSource(job, options)
    try:
        found = {}
        for f in second.list_folders():
            since = states[f.name]
            assert since is not None
            found[f.name] = (since, second.changes(f, since))
    finally:
        second.close()

    for name, (since, change) in found.items():
        assert change is not None
        moved = name in ("Sent Messages", "Données/Été")
        assert (change.state is since) is not moved, name
        assert len(change.new) == (1 if moved else 0), name

"""Local sources end to end: a Maildir tree and a Thunderbird mbox tree, filled with the
corpus's real messages, enqueued with `migrator enqueue --source-type maildir|mbox` and
copied into Dovecot by a Celery worker: every message once, byte for byte (mbox escaping
undone), with its flags and arrival date, newest first."""

from __future__ import annotations

import hashlib
import os
import ssl
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from imapclient import IMAPClient
from localtrees import (
    LocalMessage,
    as_dovecot_stores,
    corpus_originals,
    mbox_messages,
    spread,
    write_maildir,
    write_thunderbird,
)
from servers.celery_worker import Worker
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from support import default_map_target, imaps, write_batch

from migrator.cli import main
from migrator.report import MailboxState
from migrator.secrets import new_key
from migrator.state import MailboxStatus, StateStore

FOLDERS = ["INBOX", "Sent", "Archive/2019", "Drafts"]


@pytest.fixture
def env(
    redis_url: str, tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    values = {
        "MIGRATOR_REDIS_URL": redis_url,
        "MIGRATOR_SECRET_KEY": new_key(),
        "MIGRATOR_STATE_DIR": str(tmp_path / "state"),
        "MIGRATOR_LOCK_TTL": "3",
        "SSL_CERT_FILE": str(tls_files.ca_cert),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}


@pytest.fixture
def worker(env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    started = Worker(env, tmp_path / "worker.log")
    yield started
    started.stop()


def enqueue_local(
    tmp_path: Path, dovecot: DovecotServer, tls_files: TlsFiles, kind: str, root: Path,
    rows: list[tuple[str, str]], *extra: str,
) -> str:  # fmt: skip
    """`migrator enqueue --source-type KIND --source-root ROOT` of (path, target) rows: no
    login and no password columns."""
    columns = ["SourceIdentity", "SourceServer", "TargetIdentity"]
    cells = [(f"restored{i}@example.test", path, target) for i, (path, target) in enumerate(rows)]
    batch = write_batch(
        tmp_path / "batch.csv", [dict(zip(columns, c, strict=True)) for c in cells], columns
    )
    secret_file = tmp_path / "target-admin.pw"
    secret_file.write_text(MASTER_PASSWORD)
    out = tmp_path / "enqueue.out"
    with out.open("w") as handle:
        old, sys.stdout = sys.stdout, handle
        try:
            code = main(
                ["enqueue", str(batch), "--method", "individual", "--source-type", kind,
                 "--source-root", str(root), "--target-server", imaps(dovecot),
                 "--target-admin", MASTER_USER, "--target-admin-password-file", str(secret_file),
                 "--ca-file", str(tls_files.ca_cert), "--late-commit-grace", "0.5", *extra]
            )  # fmt: skip
        finally:
            sys.stdout = old
    assert code == 0
    return out.read_text().strip().splitlines()[-1]


def wait_until_final(store: StateStore, batch_id: str, timeout: float = 120) -> list[MailboxStatus]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.mailboxes(batch_id)
        if rows and all(r.state.final for r in rows):
            return rows
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} did not end: {store.mailboxes(batch_id)}")


def held(
    dovecot: DovecotServer, login: str, context: ssl.SSLContext
) -> dict[str, list[tuple[str, frozenset[str], datetime]]]:
    """Each folder's messages in UID order (the order they were appended): digest, flags
    (without \\Recent), INTERNALDATE."""
    found: dict[str, list[tuple[str, frozenset[str], datetime]]] = {}
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=context) as client:
        client.normalise_times = False
        client.plain_login(login, DEFAULT_USER_PASSWORD)
        for flags, _delimiter, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
            found[name] = [
                (
                    hashlib.sha256(data[b"BODY[]"]).hexdigest(),
                    frozenset(f.decode() for f in data[b"FLAGS"] if f.lower() != b"\\recent"),
                    data[b"INTERNALDATE"],
                )
                for _uid, data in sorted(fetched.items())
            ]
    return found


def expected(messages: list[LocalMessage]) -> Counter[tuple[str, str, frozenset[str], datetime]]:
    return Counter(
        (
            default_map_target(tuple(m.folder.split("/"))),
            hashlib.sha256(as_dovecot_stores(m.raw)).hexdigest(),
            frozenset(m.flags),
            m.date,
        )
        for m in messages
    )


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_a_restored_mailbox_reaches_dovecot_whole_through_a_celery_worker(
    kind: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    env: dict[str, str],
    worker: Worker,
    tmp_path: Path,
) -> None:
    originals = [raw for _, raw in corpus_originals()]
    assert len(originals) >= 50
    assert any(b"\nFrom " in raw for raw in originals)  # body lines an mbox must escape
    messages = spread(originals, FOLDERS)
    root = tmp_path / "restore"
    if kind == "maildir":
        write_maildir(root / "jdoe" / "Maildir", messages)
    else:
        # Status fields carry the flags, and the Sent file has CRLF line ends.
        messages = mbox_messages(messages)
        write_thunderbird(root / "jdoe" / "Maildir", messages, crlf_folders=["Sent"])
    target, other = make_user(), make_user()

    batch_id = enqueue_local(
        tmp_path, dovecot, tls_files, kind, root,
        [("jdoe/Maildir", target), ("nobody/Maildir", other)],  # nobody's was not restored
        "--connections-per-mailbox", "1",
    )  # fmt: skip
    row, missing = wait_until_final(StateStore.from_url(env["MIGRATOR_REDIS_URL"]), batch_id)

    assert missing.state is MailboxState.FAILED, missing
    gone = root.resolve() / "nobody" / "Maildir"
    assert f"(line 3, {gone}): {gone} does not exist" in missing.last_error
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == len(messages)
    view = held(dovecot, target, ssl_context)
    got = Counter((name, *item) for name, items in view.items() for item in items)
    assert got == expected(messages)
    for name, items in view.items():  # appended newest first, folder by folder
        dates = [date for _, _, date in items]
        assert dates == sorted(dates, reverse=True), name

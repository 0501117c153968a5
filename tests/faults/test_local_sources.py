"""Local sources (Maildir, mbox) under the faults an IMAP source meets: the target's quota
runs out, and a worker is killed in the middle of a mailbox; each message still lands once,
the newest first."""

from __future__ import annotations

import ssl
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from celerykit import cli, enqueue, wait_for
from faultkit import run_options, stored
from localtrees import (
    MAILDIR_LETTERS,
    LocalMessage,
    as_dovecot_stores,
    mbox_messages,
    write_maildir,
    write_thunderbird,
)
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import make_message, message_flags
from support import default_map_target, digest

from migrator.batch import AccessMethod, parse_batch
from migrator.connectors.local.enqueue import resolve_batch
from migrator.connectors.local.settings import LocalSettings
from migrator.prepare import build_jobs
from migrator.report import MailboxState
from migrator.runner import execute_job
from migrator.secrets import SecretBox, new_key
from migrator.state import MailboxStatus, StateStore

MAILBOX = "jdoe"


def restored(
    root: Path, kind: str, folders: dict[str, int], size_hint: int = 2000
) -> list[LocalMessage]:
    """A mailbox restored below `root`/jdoe: a Maildir++ tree, or a Thunderbird directory
    of mbox files; messages from mailgen, each dated as its Date field says."""
    messages = []
    for folder, count in folders.items():
        for i in range(count):
            raw, date = make_message(i, folder=folder, size_hint=size_hint)
            flags = tuple(f for f in message_flags(i) if f in MAILDIR_LETTERS)
            messages.append(LocalMessage(folder, raw, date, flags))
    if kind == "maildir":
        write_maildir(root / MAILBOX, messages)
        return messages
    messages = mbox_messages(messages)
    write_thunderbird(root / MAILBOX, messages)
    return messages


def expected_at_target(messages: list[LocalMessage]) -> dict[str, Counter[str]]:
    expected: dict[str, Counter[str]] = {}
    for m in messages:
        folder = default_map_target(tuple(m.folder.split("/")))
        expected.setdefault(folder, Counter())[digest(as_dovecot_stores(m.raw))] += 1
    return expected


def newest_that_fit(messages: list[LocalMessage], quota: int) -> list[LocalMessage]:
    """What a quota stop must leave at the target: the newest messages, by the dates the
    files keep, up to the first one that does not fit (worked out apart from the copier)."""
    fits, used = [], 0
    for message in sorted(messages, key=lambda m: m.date, reverse=True):
        if used + message.size > quota:
            break
        fits.append(message)
        used += message.size
    return fits


def run_here(
    store: StateStore,
    batch_id: str,
    kind: str,
    root: Path,
    target: str,
    dovecot: DovecotServer,
    ca_file: Path,
    quotas: dict[str, int] | None = None,
) -> MailboxStatus:
    """One local mailbox through runner.execute_job (what a Celery task runs), to its end."""
    options, _ = run_options(dovecot.imaps_port, dovecot.imaps_port, ca_file, quotas=quotas)
    options = replace(options, source_kind=kind, source_settings=LocalSettings(root=str(root)))
    text = f"SourceIdentity,SourceServer,TargetIdentity\nrestored@example.test,{MAILBOX},{target}\n"
    parsed = resolve_batch(parse_batch(text, AccessMethod.INDIVIDUAL, protocol=kind), str(root))
    box = SecretBox(new_key())
    (job,) = build_jobs(parsed.jobs, options, box)
    store.create_batch(batch_id, {}, [job])
    execute_job(store, batch_id, job.job_id, box)
    status = store.mailbox(batch_id, job.job_id)
    assert status is not None
    return status


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_quota_stop_keeps_the_newest_local_messages_and_a_rerun_adds_the_rest_once(
    kind: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
    tmp_path: Path,
    exactly_once: object,
) -> None:
    root = tmp_path / "restore"
    messages = restored(root, kind, {"INBOX": 40, "Sent": 30, "Archive/2019": 30})
    target = make_user()
    quota = sum(m.size for m in messages) // 3
    fits = newest_that_fit(messages, quota)
    store = StateStore.from_url(redis_url)
    where = (dovecot, tls_files.ca_cert)

    first = run_here(store, "first", kind, root, target, *where, {target.lower(): quota})

    assert first.state is MailboxState.QUOTA_STOPPED, first
    assert (first.done_messages, first.done_bytes) == (len(fits), sum(m.size for m in fits))
    assert first.left_messages == len(messages) - len(fits)
    held = stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert Counter(digest(b) for bodies in held.values() for b in bodies) == Counter(
        digest(as_dovecot_stores(m.raw)) for m in fits
    )

    second = run_here(store, "second", kind, root, target, *where)

    assert second.state is MailboxState.SYNCED, second
    assert second.copied_messages == len(messages) - len(fits)
    exactly_once(  # type: ignore[operator]
        expected_at_target(messages), stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    )


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_worker_killed_mid_local_mailbox_then_resume_copies_each_message_once(
    kind: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: object,
) -> None:
    root = tmp_path / "restore"
    folders = {"INBOX": 300, "Sent": 150, "Archive/2019": 150}
    messages = restored(root, kind, folders, size_hint=20_000)
    target = make_user()
    url = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    workers.start("worker1")
    batch_id = enqueue(
        tmp_path, MAILBOX, url, tls_files.ca_cert, [("restored@example.test", "", target)],
        "--source-type", kind, "--source-root", str(root),
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    wait_for(store, batch_id, lambda rows: bool(rows) and rows[0].done_messages >= 150)

    workers[0].kill()
    killed = store.mailboxes(batch_id)[0]
    assert killed.state is MailboxState.RUNNING
    assert 0 < killed.done_messages < len(messages)
    assert cli(["resume", batch_id, "--no-wait"])[0] == 0
    workers.start("worker2")
    (row,) = wait_for(store, batch_id)

    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == len(messages)
    exactly_once(  # type: ignore[operator]
        expected_at_target(messages), stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    )

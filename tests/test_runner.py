"""runner.execute_job, the hub every mailbox goes through (a Celery task, or the pool of
`migrator run`), against a real Dovecot and redis-server: it reads the job, takes the
target mailbox's locks, opens both ends through their connectors and records the end."""

from __future__ import annotations

import json
import ssl

import pytest
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import populate
from support import counts, imaps, individual_jobs, run_options, snapshot

from migrator import mailboxid
from migrator.batch import parse_server
from migrator.report import MailboxState
from migrator.runner import MailboxBusy, execute_job, lock_ttl
from migrator.secrets import SecretBox, new_key
from migrator.state import NewJob, StateStore


def _enqueue(
    store: StateStore, dovecot: DovecotServer, tls_files: TlsFiles, source: str, target: str
) -> tuple[SecretBox, NewJob]:
    box = SecretBox(new_key())
    row = {
        "SourceIdentity": source,
        "SourceServer": imaps(dovecot),
        "SourceLoginID": source,
        "SourcePassword": DEFAULT_USER_PASSWORD,
        "TargetIdentity": target,
    }
    (job,) = individual_jobs([row], run_options(dovecot, tls_files.ca_cert), box)
    store.create_batch("b1", {}, [job])
    return box, job


def test_a_job_runs_through_its_connectors_to_synced(
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_user(), make_user()
    populate("127.0.0.1", dovecot.imaps_port, source, DEFAULT_USER_PASSWORD,
             {"INBOX": 5, "Sent": 3}, ssl_context=ssl_context)  # fmt: skip
    store = StateStore.from_url(redis_url)
    box, job = _enqueue(store, dovecot, tls_files, source, target)

    result = execute_job(store, "b1", job.job_id, box)

    assert result is not None and result.state is MailboxState.SYNCED, result
    assert counts(snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)) == {
        "INBOX": 5,
        "Sent": 3,
    }
    status = store.mailbox("b1", job.job_id)
    assert status is not None and status.state is MailboxState.SYNCED
    # Done is done: running it again does nothing at all.
    assert execute_job(store, "b1", job.job_id, box) is None


def test_a_payload_of_another_version_fails_its_mailbox_saying_why(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles, redis_url: str
) -> None:
    store = StateStore.from_url(redis_url)
    box, job = _enqueue(store, dovecot, tls_files, make_user(), make_user())
    payload = json.loads(job.payload)
    payload["version"] = 1
    store.client.set(f"migrator:job:b1:{job.job_id}", json.dumps(payload))

    result = execute_job(store, "b1", job.job_id, box)

    assert result is not None and result.state is MailboxState.FAILED
    status = store.mailbox("b1", job.job_id)
    assert status is not None and status.state is MailboxState.FAILED
    assert "version 1" in status.last_error and "enqueue the batch again" in status.last_error


def test_a_changed_payload_fails_as_tampered_before_connecting(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles, redis_url: str
) -> None:
    store = StateStore.from_url(redis_url)
    box, job = _enqueue(store, dovecot, tls_files, make_user(), make_user())
    payload = json.loads(job.payload)
    payload["source"]["credentials"]["login"] = "someone-else@example.test"
    store.client.set(f"migrator:job:b1:{job.job_id}", json.dumps(payload))

    result = execute_job(store, "b1", job.job_id, box)

    assert result is not None and result.state is MailboxState.FAILED
    assert "changed after it was enqueued" in (result.error or "")


def test_a_mailbox_another_worker_writes_is_busy_and_left_as_it_is(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles, redis_url: str
) -> None:
    store = StateStore.from_url(redis_url)
    target = make_user()
    box, job = _enqueue(store, dovecot, tls_files, make_user(), target)
    names = mailboxid.lock_names(parse_server(imaps(dovecot)), target)
    assert store.acquire(names, "another-worker", lock_ttl()) is not None

    with pytest.raises(MailboxBusy):
        execute_job(store, "b1", job.job_id, box)
    status = store.mailbox("b1", job.job_id)
    assert status is not None and status.state is MailboxState.QUEUED


def test_a_job_whose_batch_is_gone_is_nothing_to_do(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)

    assert execute_job(store, "no-such-batch", "00001", SecretBox(new_key())) is None


def test_a_target_that_cannot_be_opened_leaves_its_source_without_a_login(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles, redis_url: str
) -> None:
    # The source's connection is made while the target is opened (logingate): its login
    # waits for the target, which here refuses, so the source never logs in.
    source = make_user()
    store = StateStore.from_url(redis_url)
    box, job = _enqueue(store, dovecot, tls_files, source, "nobody-here@example.test")

    result = execute_job(store, "b1", job.job_id, box)

    assert result is not None and result.state is MailboxState.NOT_READY, result
    log = dovecot.log_path.read_text(errors="replace")
    assert "nobody-here@example.test" in log  # the target was tried ...
    assert f"Login: user=<{source}>" not in log  # ... and the source never logged in to

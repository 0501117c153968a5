"""A worker killed at any point, again and again, and resumed: each message lands once."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from celerykit import cli, wait_for
from faultkit import ExactlyOnce, enqueue, run_options
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.proxy import TcpProxy
from support import batch_job, batch_password, individual_jobs, source_row

from migrator.connectors import connector
from migrator.connectors.base import SourceEnd
from migrator.connectors.imap.target import ImapTarget
from migrator.copier import CopyOptions, migrate_mailbox
from migrator.errors import TransientError
from migrator.foldermap import default_folder_map
from migrator.report import MailboxResult, MailboxState
from migrator.secrets import SecretBox, new_key
from migrator.state import RedisProgress, StateStore
from migrator.targets.base import AppendItem, MailboxTarget, Outcome

KILL_SEED = 20_240_611
KILLS = 10
# Bytes a second, each way on each connection, of the link the ten kills' worker copies over.
SLOW_LINK = 1_000_000


def test_ten_sigkills_at_random_points_then_resume_copy_each_message_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
    request: pytest.FixtureRequest,
) -> None:
    rng = random.Random(KILL_SEED)
    password = batch_password("kills")
    source, target = make_user(password), make_user()
    # The worker reaches Dovecot over a link of SLOW_LINK bytes a second each way on each
    # connection, so that ten kills land before the end however fast the machine: on
    # loopback four connections with two grown batches in flight each ran some hundreds
    # of messages past a kill's goal, and finished before the tenth kill.  Over this link
    # a batch lands every few tenths of a second, and a kill some 50 to 100 messages past
    # its goal: ten reach about 1,000 of the 2,400.
    folders = {"INBOX": 1200, "Sent Messages": 600, "Projects/2024": 600}
    sent = fill(source, folders, password, size_hint=12_000)
    assert len(sent) == 2400
    link = TcpProxy(dovecot.imaps_port, bandwidth=SLOW_LINK).start()
    request.addfinalizer(link.close)
    url = f"imaps://127.0.0.1:{link.port}"
    workers.start("worker0", loglevel="DEBUG")
    batch_id = enqueue(tmp_path, url, url, tls_files.ca_cert, [(source, password, target)])
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])

    killed_at = []
    for kill in range(KILLS):
        start = store.mailboxes(batch_id)[0].done_messages
        goal = start + rng.randint(10, 40)
        rows = wait_for(
            store, batch_id, lambda rows, g=goal: rows[0].done_messages >= g or rows[0].state.final
        )
        assert not rows[0].state.final, f"finished before kill {kill + 1}: {rows[0]}"
        # A little more, at random (a batch of appends takes some 50 ms on loopback): the
        # kill lands mid-FETCH, mid-APPEND, or between an APPEND and its checkpoint.
        time.sleep(rng.uniform(0, 0.05))
        workers[-1].kill()
        killed_at.append(store.mailboxes(batch_id)[0].done_messages)
        assert cli(["resume", batch_id, "--no-wait"])[0] == 0
        workers.start(f"worker{kill + 1}", loglevel="DEBUG")

    (row,) = wait_for(store, batch_id, timeout=180)
    assert len(killed_at) == KILLS and killed_at[-1] < len(sent), killed_at
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == len(sent)
    exactly_once.copied(source, password, target)
    _no_body_line_in([w.log for w in workers], [m.raw.split(b"\r\n\r\n", 1)[1] for m in sent[::25]])


def test_a_sigkilled_workers_mailbox_is_requeued_and_done_within_a_minute_without_resume(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("reaped")
    source, target = make_user(password), make_user()
    fill(source, {"INBOX": 600, "Archive": 300}, password, size_hint=12_000)
    url = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    doomed = workers.start("doomed")
    batch_id = enqueue(
        tmp_path, url, url, tls_files.ca_cert, [(source, password, target)],
        "--connections-per-mailbox", "1",
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    wait_for(
        store,
        batch_id,
        lambda rows: rows[0].state is MailboxState.RUNNING and rows[0].done_messages >= 60,
        timeout=60,
    )
    # Two live workers, so two reapers race for the dead worker's mailbox.
    survivors = [workers.start(f"survivor{n}") for n in (1, 2)]

    doomed.kill()  # SIGKILL to its whole process group: no goodbye, no nack
    killed = time.monotonic()
    (before,) = store.mailboxes(batch_id)
    assert before.state is MailboxState.RUNNING and before.done_messages < 900, before
    (row,) = wait_for(store, batch_id, lambda rows: rows[0].state.final, timeout=60)

    assert row.state is MailboxState.SYNCED, row
    assert time.monotonic() - killed < 60
    assert row.done_messages == row.total_messages == 900
    # Requeued once, by one reaper; nobody ran resume.
    assert store.client.hget(f"migrator:mbx:{batch_id}:{row.job_id}", "requeued") == "1"
    assert sum("requeued" in w.log_text() for w in survivors) == 1
    exactly_once.copied(source, password, target)


def _no_body_line_in(logs: Sequence[Path], bodies: Sequence[bytes]) -> None:
    lines = [b.split(b"\r\n")[len(b.split(b"\r\n")) // 2].decode() for b in bodies]
    lines = [line for line in lines if len(line) > 40]
    assert lines
    for log in logs:
        text = log.read_text(errors="replace")
        assert not [line for line in lines if line in text], f"a message body line in {log}"


class StoresThenFails:
    """Our MailboxTarget, whose `fail_on`-th append_batch reaches the server (the messages
    are stored) and then fails as a lost connection would, before the copier hears back:
    the copier never checkpoints that batch."""

    def __init__(self, inner: ImapTarget, calls: list[int], fail_on: int) -> None:
        self._inner = inner
        self._calls = calls
        self._fail_on = fail_on
        # Batches of 25 however small the messages (GrowingBatchTarget), so there is a third.
        self.batch_size = self.small_batch_size = inner.batch_size

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        outcomes = self._inner.append_batch(items)
        self._calls.append(len(items))
        if len(self._calls) == self._fail_on:
            raise TransientError("target connection lost after the server stored the batch")
        return outcomes

    def __getattr__(self, name: str) -> object:
        if name in ("send_together", "land_together"):  # batches go through append_batch
            raise AttributeError(name)
        return getattr(self._inner, name)


class LandsThenFails:
    """The same where batches are written together (TogetherTarget), a batch written
    before the last one's answers are in: the `fail_on`-th batch is stored, its answers
    read, and the copier is told the connection broke instead, with the next batch
    already written."""

    def __init__(self, inner: ImapTarget, calls: list[int], fail_on: int) -> None:
        self._inner = inner
        self._calls = calls
        self._fail_on = fail_on
        # Batches of 25 however small the messages (GrowingBatchTarget), so there is a third.
        self.batch_size = self.small_batch_size = inner.batch_size

    def land_together(self, sent: Any) -> list[Outcome]:
        outcomes = self._inner.land_together(sent)
        self._calls.append(len(outcomes))
        if len(self._calls) == self._fail_on:
            raise TransientError("target connection lost after the server stored the batch")
        return outcomes

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


class _FailedCopy(NamedTuple):
    result: MailboxResult
    progress: RedisProgress
    sent: Any  # what fill() put at the source
    calls: list[int]  # each append batch's size, as the wrapper saw it
    source: str
    password: str
    target: str


def _copy_failing_on_the_third_batch(
    wrapper: Callable[[MailboxTarget, list[int]], MailboxTarget],
    batch_id: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    redis_url: str,
) -> _FailedCopy:
    """A mailbox copied in process through a target `wrapper` that fails its third batch
    (after storing it), so the copy takes a second pass."""
    password = batch_password(batch_id)
    source, target = make_user(password), make_user()
    sent = fill(source, {"INBOX": 90, "Archive": 60}, password)
    options, source_url = run_options(dovecot.imaps_port, dovecot.imaps_port, tls_files.ca_cert)
    box = SecretBox(new_key())
    row = source_row(source_url, source, password, target)
    (job,) = individual_jobs([row], options, box)
    store = StateStore.from_url(redis_url)
    store.create_batch(batch_id, {}, [job])
    mailbox = batch_job(row)
    calls: list[int] = []

    def open_target() -> MailboxTarget:
        creds = options.target.credentials(target)
        inner = ImapTarget(options.target.server, creds, target, options.connect)
        return wrapper(inner, calls)

    progress = store.progress(batch_id, job.job_id, job.mailbox_key)
    result = migrate_mailbox(
        lambda: connector("imap").open_source(SourceEnd(mailbox, options.connect)),
        open_target,
        default_folder_map(),
        progress,
        CopyOptions(max_wait=1, late_commit_grace=0),  # stored before it failed: nothing late
    )
    return _FailedCopy(result, progress, sent, calls, source, password, target)


def test_batches_in_flight_stored_but_never_checkpointed_are_recognised_not_sent_again(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    copy = _copy_failing_on_the_third_batch(
        lambda inner, calls: LandsThenFails(inner, calls, fail_on=3),
        "inflight", dovecot, make_user, fill, tls_files, redis_url,
    )  # fmt: skip
    result, calls = copy.result, copy.calls

    assert result.state is MailboxState.DONE, result
    assert calls[2] > 1  # a whole batch was stored without its checkpoints
    # The second pass found at the target what the first stored and did not checkpoint
    # (the third batch, and the fourth if it was not landed) and sent only the rest.
    assert result.already_messages >= sum(calls[:3])
    assert result.already_messages + result.copied_messages == len(copy.sent)
    assert len(copy.progress.checkpoints()) == len(copy.sent)
    exactly_once.copied(copy.source, copy.password, copy.target)


def test_batch_stored_but_never_checkpointed_is_recognised_not_sent_again(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    copy = _copy_failing_on_the_third_batch(
        lambda inner, calls: StoresThenFails(inner, calls, fail_on=3),
        "stored", dovecot, make_user, fill, tls_files, redis_url,
    )  # fmt: skip
    result, calls = copy.result, copy.calls

    assert result.state is MailboxState.DONE, result
    lost_batch = calls[2]
    assert lost_batch > 1  # a whole MULTIAPPEND batch was stored without its checkpoints
    # The second pass found the unacknowledged batch at the target and sent the rest.
    assert result.already_messages == sum(calls[:3])
    assert result.copied_messages == len(copy.sent) - sum(calls[:3])
    assert len(copy.progress.checkpoints()) == len(copy.sent)
    exactly_once.copied(copy.source, copy.password, copy.target)

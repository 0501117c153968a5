"""Gmail as a source under faults: workers killed mid-copy and resumed, then Redis emptied
and the batch run again; every message lands once, in the folder the rule picks."""

from __future__ import annotations

import random
import ssl
import time
from pathlib import Path

import redis
from celerykit import cli, wait_for
from faultkit import ExactlyOnce, enqueue, stored
from gmailkit import GmailAccountMaker, expected, gmail_messages
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from support import imaps

from migrator.report import MailboxState
from migrator.state import StateStore

KILL_SEED = 20_261_204
KILLS = 3


def test_gmail_mailbox_through_killed_workers_and_a_lost_redis_lands_once(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    rng = random.Random(KILL_SEED)
    account = gmail_account(gmail_messages(1200, size_hint=8_000, seed=20))
    target = make_user()
    wanted = expected(account.messages)
    total = sum(sum(c.values()) for c in wanted.values())
    workers.start("worker0")
    batch_id = enqueue(
        tmp_path, account.proxy.url, imaps(dovecot), tls_files.ca_cert,
        [(account.login, account.password, target)],
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])

    for kill in range(KILLS):
        goal = store.mailboxes(batch_id)[0].done_messages + rng.randint(30, 120)
        rows = wait_for(
            store, batch_id, lambda rows, g=goal: rows[0].done_messages >= g or rows[0].state.final
        )
        assert not rows[0].state.final, f"finished before kill {kill + 1}: {rows[0]}"
        time.sleep(rng.uniform(0, 0.05))  # mid-FETCH, mid-APPEND or before a checkpoint
        workers[-1].kill()
        assert cli(["resume", batch_id, "--no-wait"])[0] == 0
        workers.start(f"worker{kill + 1}")

    (row,) = wait_for(store, batch_id, timeout=240)
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == total

    # Redis forgets everything; the batch comes back from its copy and copies nothing.
    redis.Redis.from_url(celery_env["MIGRATOR_REDIS_URL"]).flushall()
    assert cli(["resume", batch_id, "--no-wait"])[0] == 0
    (again,) = wait_for(store, batch_id, timeout=240)
    assert again.state is MailboxState.SYNCED, again
    assert again.copied_messages == 0
    exactly_once(wanted, stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context))

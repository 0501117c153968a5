"""What Celery's own tools (Flower, `celery events`) see of migrator's tasks, from a
worker started as the README says (`-E`: task events): each task named after its batch
and mailbox, and a mailbox that failed shown as a failed task with its error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celerykit import enqueue, wait_for
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from support import batch_password, eventually, imaps

from migrator.report import MailboxState
from migrator.state import StateStore


@pytest.fixture
def task_events(celery_env: dict[str, str]) -> Iterator[list[dict[str, Any]]]:
    """Every task event the workers send, as Flower receives them."""
    from workers.app import app

    app.conf.update(broker_url=celery_env["MIGRATOR_REDIS_URL"])
    events: list[dict[str, Any]] = []
    ready = threading.Event()
    connection = app.connection_for_read(celery_env["MIGRATOR_REDIS_URL"])
    receiver = app.events.Receiver(connection, handlers={"*": events.append})

    def listen() -> None:
        # The receiver consumes on a clone of `connection`: drain that one.
        with receiver.consumer_context() as (consuming, _, _):  # subscribed from here on
            ready.set()
            while not receiver.should_stop:
                try:
                    consuming.drain_events(timeout=0.5)
                except TimeoutError:
                    continue

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert ready.wait(30)
    yield events
    receiver.should_stop = True
    thread.join(10)
    connection.release()


def test_tasks_are_named_by_batch_and_mailbox_and_a_failed_mailbox_is_a_failed_task(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    task_events: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    password = batch_password("flower")
    good, bad = make_user(password), make_user(password)
    fill(good, {"INBOX": 3}, password, size_hint=1_000)
    pairs = [(good, password, make_user()), (bad, "not-" + password, make_user())]
    batch_id = enqueue(tmp_path, imaps(dovecot), imaps(dovecot), tls_files.ca_cert, pairs)
    workers.start("worker1", options=["-E"])

    rows = wait_for(StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"]), batch_id)
    assert [r.state for r in rows] == [MailboxState.SYNCED, MailboxState.FAILED]

    def kinds(kind: str) -> list[dict[str, Any]]:
        return [e for e in task_events if e["type"] == kind]

    eventually(lambda: len(kinds("task-failed")) + len(kinds("task-succeeded")) == 2, timeout=30)
    names = {e["uuid"]: e["name"] for e in kinds("task-received")}
    assert sorted(names.values()) == [
        f"migrate {batch_id}/00001 {good}",
        f"migrate {batch_id}/00002 {bad}",
    ]
    (failed,) = kinds("task-failed")
    assert names[failed["uuid"]].endswith(bad)
    assert "MailboxFailed" in failed["exception"] and "AUTHENTICATIONFAILED" in failed["exception"]
    (succeeded,) = kinds("task-succeeded")
    assert names[succeeded["uuid"]].endswith(good)
    log = workers[0].log_text()
    assert "Traceback" not in log  # an expected failure: one line, no traceback

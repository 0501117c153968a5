"""Heartbeats on mailbox rows, the reaper that requeues a dead worker's mailbox, and the
heartbeat age `migrator status` shows, against a real Redis."""

from __future__ import annotations

import io
import json
import threading
from contextlib import redirect_stdout

import pytest

from migrator.cli import main
from migrator.report import MailboxState
from migrator.state import NewJob, StateStore
from workers.reaper import reap_once

STALE = 30.0


def _running(store: StateStore, *job_ids: str) -> None:
    store.create_batch(
        "b",
        {},
        [NewJob(j, 2, f"{j}@x.test", f"{j}@y.test", f"key-{j}", "{}") for j in job_ids],
    )
    for job_id in job_ids:
        store.set_state("b", job_id, MailboxState.RUNNING)
        store.beat("b", job_id, [f"localhost/{job_id}@y.test"])


def _last_beat_ago(store: StateStore, job_id: str, seconds: float) -> None:
    """As if the worker of this mailbox last beat `seconds` ago (by Redis's clock)."""
    now, micros = store.client.time()
    when = now + micros / 1e6 - seconds
    store.client.hset(f"migrator:mbx:b:{job_id}", "heartbeat", str(when))
    store.client.zadd("migrator:beats", {f"b:{job_id}": when})


def _row(store: StateStore, job_id: str) -> dict[str, str]:
    return {str(k): str(v) for k, v in store.client.hgetall(f"migrator:mbx:b:{job_id}").items()}


def test_of_many_reapers_one_only_requeues_a_dead_workers_mailbox(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    _running(store, "1")
    _last_beat_ago(store, "1", STALE + 5)
    sent: list[tuple[str, str]] = []
    start = threading.Barrier(8)

    def reaper() -> None:
        start.wait()
        reap_once(
            StateStore.from_url(redis_url), STALE, lambda b, j: sent.append((b, j)), redis_up_for=0
        )

    threads = [threading.Thread(target=reaper) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sent == [("b", "1")]
    row = _row(store, "1")
    assert (row["state"], row["requeued"]) == ("queued", "1")
    assert store.stale_mailboxes(0) == []  # off the watch until a worker beats for it again


def test_a_mailbox_whose_worker_beats_or_holds_the_lock_stays_where_it_is(
    redis_url: str,
) -> None:
    store = StateStore.from_url(redis_url)
    _running(store, "1", "2", "3")
    _last_beat_ago(store, "1", STALE - 5)  # beat recently
    _last_beat_ago(store, "2", STALE + 5)  # stale, but its lock is held
    assert store.acquire(["localhost/2@y.test"], "worker-a", 60) is not None
    _last_beat_ago(store, "3", STALE + 5)  # dead

    sent: list[tuple[str, str]] = []
    assert reap_once(store, STALE, lambda b, j: sent.append((b, j)), redis_up_for=0) == [("b", "3")]
    assert sent == [("b", "3")]
    assert [_row(store, j)["state"] for j in ("1", "2", "3")] == ["running", "running", "queued"]


def test_a_mailbox_no_longer_running_leaves_the_watch(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    _running(store, "1")
    store.set_state("b", "1", MailboxState.DONE)
    _last_beat_ago(store, "1", STALE + 5)
    assert reap_once(store, STALE, lambda b, j: None, redis_up_for=0) == []
    assert store.stale_mailboxes(0) == []
    assert _row(store, "1")["state"] == "done"


def test_nothing_is_requeued_before_redis_has_been_up_long_enough_for_workers_to_beat(
    redis_url: str,
) -> None:
    store = StateStore.from_url(redis_url)
    _running(store, "1")
    _last_beat_ago(store, "1", STALE + 5)
    assert reap_once(store, STALE, lambda b, j: None, redis_up_for=store.uptime() + 60) == []
    assert _row(store, "1")["state"] == "running"


def test_a_requeue_that_could_not_be_sent_is_taken_again_by_the_next_look(
    redis_url: str,
) -> None:
    store = StateStore.from_url(redis_url)
    _running(store, "1")
    _last_beat_ago(store, "1", STALE + 5)

    def broker_down(batch_id: str, job_id: str) -> None:
        raise ConnectionError("broker away")

    with pytest.raises(ConnectionError):
        reap_once(store, STALE, broker_down, redis_up_for=0)
    assert (_row(store, "1")["state"], _row(store, "1")["requeued"]) == ("running", "0")
    sent: list[tuple[str, str]] = []
    assert reap_once(store, STALE, lambda b, j: sent.append((b, j)), redis_up_for=0) == [("b", "1")]
    assert _row(store, "1")["requeued"] == "1"


def test_a_worker_whose_batch_redis_lost_does_not_make_its_row_again(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.beat("gone", "1", ["localhost/1@y.test"])
    assert not store.client.exists("migrator:mbx:gone:1")
    assert store.stale_mailboxes(0) == []


def _status(args: list[str]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(["status", *args]) == 0
    return out.getvalue()


def test_status_shows_each_running_mailboxs_heartbeat_age(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIGRATOR_REDIS_URL", redis_url)
    monkeypatch.setenv("COLUMNS", "200")
    store = StateStore.from_url(redis_url)
    _running(store, "1", "2")
    _last_beat_ago(store, "1", 42)
    store.set_state("b", "2", MailboxState.DONE)

    mailboxes = json.loads(_status(["b", "--json"]))["mailboxes"]
    first, second = mailboxes
    assert 42 <= first["heartbeat_age"] < 52
    assert second["heartbeat_age"] is None  # done: no worker to hear from

    table = _status(["b"])
    assert "Heartbeat" in table
    line = next(line for line in table.splitlines() if "1@x.test" in line)
    assert "running" in line and any(f"{n} s" in line for n in range(42, 52))

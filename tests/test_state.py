"""Progress, checkpoints, locks and connection caps, against a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from support import eventually

from migrator.errors import LockLost
from migrator.leases import heartbeat
from migrator.plan import MessageRef
from migrator.report import MailboxResult, MailboxState, SkippedMessage
from migrator.state import Lease, NewJob, StateStore


def _job(job_id: str, identity: str) -> NewJob:
    return NewJob(job_id, 2, identity, identity, f"key-{job_id}", '{"sealed": "token"}')


def _ref(uid: int, size: int = 10, folder: str = "Données/Été") -> MessageRef:
    return MessageRef(folder, 7, str(uid), size, datetime(2024, 1, 1, tzinfo=UTC))


def test_a_new_batch_lists_its_mailboxes_queued(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.create_batch(
        "b", {"method": "individual"}, [_job("1", "a@x.test"), _job("2", "b@x.test")]
    )
    rows = store.mailboxes("b")
    assert [r.source_identity for r in rows] == ["a@x.test", "b@x.test"]
    assert {r.state for r in rows} == {MailboxState.QUEUED}
    assert store.batch_meta("b")["method"] == "individual"


def test_a_message_id_of_any_shape_is_checkpointed_as_it_is(redis_url: str) -> None:
    """Ids are opaque: an Exchange ItemId, a Maildir file name with its colon, a percent."""
    store = StateStore.from_url(redis_url)
    store.create_batch("b", {}, [_job("1", "a@x.test")])
    progress = store.progress("b", "1", "key-1")
    ids = ["AAMkAGI2TG93AAA=", "1733312000.M1P2.host:2,S", "50%:%3A"]
    progress.copied([(MessageRef("Arch:2024", 9, uid, 10, None), "k") for uid in ids])

    assert set(progress.checkpoints()) == {("Arch:2024", 9, uid) for uid in ids}


def test_copied_messages_are_checkpointed_and_counted(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.create_batch("b", {}, [_job("1", "a@x.test")])
    progress = store.progress("b", "1", "key-1")
    progress.planned(total_messages=3, total_bytes=30, done_messages=0, done_bytes=0)
    progress.copied([(_ref(1), "k1"), (_ref(2, size=15), "k2")])
    progress.copied([(_ref(4), "k4")])
    progress.recognised([(_ref(3), "k3")])
    assert progress.checkpoints() == {
        ("Données/Été", 7, str(uid)): f"k{uid}" for uid in (1, 2, 3, 4)
    }
    row = store.mailbox("b", "1")
    assert row is not None and (row.done_messages, row.done_bytes) == (3, 35)
    ((_, messages, size),) = store.throughput("b")
    assert (messages, size) == (3, 35)


def test_the_current_folder_is_shown_from_the_next_checkpoint_on(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.create_batch("b", {}, [_job("1", "a@x.test")])
    progress = store.progress("b", "1", "key-1")
    progress.folder("Archive")
    progress.copied([(_ref(1, folder="Archive"), "k")])
    progress.folder("INBOX")
    row = store.mailbox("b", "1")
    assert row is not None and row.current_folder == "Archive"
    progress.copied([(_ref(2, folder="INBOX"), "k")])
    row = store.mailbox("b", "1")
    assert row is not None and row.current_folder == "INBOX"


def test_checkpoints_outlive_the_batch_that_wrote_them(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.progress("b1", "1", "mailbox").copied([(_ref(1), "k")])
    # A later batch (a delta pass) over the same mailbox starts from them.
    assert store.progress("b2", "9", "mailbox").checkpoints() == {("Données/Été", 7, "1"): "k"}


def test_checkpoints_an_earlier_version_kept_are_read_without_their_keys(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.client.sadd("migrator:ckpt:old-key", "7:1:INBOX", "7:2:Données/Été")
    progress = store.progress("b", "1", "mailbox", legacy_key="old-key")
    progress.copied([(_ref(3), "k3")])
    assert progress.checkpoints() == {
        ("INBOX", 7, "1"): None,
        ("Données/Été", 7, "2"): None,
        ("Données/Été", 7, "3"): "k3",
    }


def test_result_records_state_left_and_skipped(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.create_batch("b", {}, [_job("1", "a@x.test")])
    store.record_result(
        "b",
        "1",
        MailboxResult(
            state=MailboxState.QUOTA_STOPPED,
            total_messages=5,
            total_bytes=50,
            left_messages=2,
            left_bytes=20,
            skipped=(SkippedMessage("INBOX", "4", 10, "too big"),),
        ),
    )
    row = store.mailbox("b", "1")
    assert row is not None
    assert (row.state, row.left_messages, row.left_bytes, row.skipped_messages) == (
        MailboxState.QUOTA_STOPPED,
        2,
        20,
        1,
    )


NAME = "localhost/t@x"


def _take(
    store: StateStore, owner: str, ttl: float = 30.0, names: tuple[str, ...] = (NAME,)
) -> Lease | None:
    return store.acquire(names, owner, ttl)


def test_mailbox_lock_admits_one_owner_and_expires(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    first = _take(store, "w1", ttl=0.3)
    assert first is not None
    assert _take(store, "w2") is None
    store.unlock(Lease((NAME,), "w2", 30))  # not the owner: no effect
    assert _take(store, "w2") is None
    # w1 was killed and stopped beating: its lock expires.
    eventually(lambda: _take(store, "w2") is not None, timeout=5, what="w1's lock expiring")


def test_a_lock_under_several_names_is_taken_all_or_none(redis_url: str) -> None:
    # "mail.example" resolving to 10.0.0.5 in one CSV, "10.0.0.5" in another: one mailbox.
    store = StateStore.from_url(redis_url)
    first = _take(store, "w1", names=("10.0.0.5/t@x", "mail.example/t@x"))
    assert first is not None and len(first.epochs) == 2
    assert _take(store, "w2", names=("10.0.0.5/t@x",)) is None
    assert _take(store, "w2", names=("10.0.0.5/t@x", "other/t@x")) is None
    assert not store.client.exists("migrator:lock:other/t@x")  # none of it was taken
    store.unlock(first)
    assert _take(store, "w2", names=("10.0.0.5/t@x",)) is not None


def test_connection_slots_are_capped_per_server_across_workers(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    assert store.acquire_slot("imaps://mail:993", "w1", cap=2, ttl=30)
    assert store.acquire_slot("imaps://mail:993", "w2", cap=2, ttl=30)
    assert not store.acquire_slot("imaps://mail:993", "w3", cap=2, ttl=30)
    assert store.acquire_slot("imaps://other:993", "w3", cap=2, ttl=30)
    store.release_slot("imaps://mail:993", "w1")
    assert store.acquire_slot("imaps://mail:993", "w3", cap=2, ttl=30)


def test_a_dead_workers_connection_slot_expires(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    assert store.acquire_slot("s", "dead", cap=1, ttl=0.2)
    assert not store.acquire_slot("s", "live", cap=1, ttl=30)
    eventually(lambda: store.acquire_slot("s", "live", cap=1, ttl=30), timeout=5)


def test_a_worker_whose_lock_another_took_stops_before_its_next_checkpoint(
    redis_url: str,
) -> None:
    store = StateStore.from_url(redis_url)
    mine = _take(store, "me", ttl=0.3)
    assert mine is not None
    with heartbeat(store, mine, "imaps://mail:993") as lost:
        store.client.delete(f"migrator:lock:{NAME}")  # expired while this worker hung
        assert _take(store, "other") is not None
        eventually(lost.is_set, timeout=5, what="the heartbeat noticing")
        progress = store.progress("b", "1", "m", mine, lost)
        with pytest.raises(LockLost):
            progress.copied([(_ref(1), "k")])
    assert progress.checkpoints() == {}


def test_every_batch_and_checkpoint_is_fenced_by_the_lock(redis_url: str) -> None:
    # A worker paused past its lock (SIGSTOP, a frozen VM), whose heartbeat has not run
    # since it woke: the fence alone stops it before the next append and checkpoint.
    store = StateStore.from_url(redis_url)
    mine = _take(store, "me")
    assert mine is not None
    progress = store.progress("b", "1", "m", mine)
    progress.fence()
    progress.copied([(_ref(1), "k1")])
    store.client.delete(f"migrator:lock:{NAME}")  # expired while paused
    assert _take(store, "newer") is not None  # another worker took the mailbox over
    with pytest.raises(LockLost):
        progress.fence()
    with pytest.raises(LockLost):
        progress.copied([(_ref(2), "k2")])
    with pytest.raises(LockLost):
        progress.recognised([(_ref(3), "k3")])
    assert progress.checkpoints() == {("Données/Été", 7, "1"): "k1"}
    assert store.client.get(f"migrator:lock:{NAME}") == "newer"


def test_a_lock_another_worker_held_and_let_go_is_not_taken_again(redis_url: str) -> None:
    # Paused past its lock; meanwhile another worker took the mailbox, finished, let go.
    store = StateStore.from_url(redis_url)
    mine = _take(store, "me")
    assert mine is not None
    store.client.delete(f"migrator:lock:{NAME}")
    newer = _take(store, "newer")
    assert newer is not None
    store.unlock(newer)
    assert not store.renew(mine)
    with pytest.raises(LockLost):
        store.progress("b", "1", "m", mine).fence()
    assert not store.client.exists(f"migrator:lock:{NAME}")


def test_a_fence_takes_a_lock_that_vanished_with_redis_data_again(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    mine = _take(store, "me")
    assert mine is not None
    store.client.flushall()  # Redis emptied: nobody holds the mailbox, so this worker may
    progress = store.progress("b", "1", "m", mine)
    progress.copied([(_ref(1), "k1")])
    assert store.client.get(f"migrator:lock:{NAME}") == "me"
    assert _take(store, "other") is None


def test_a_lock_that_vanished_with_redis_data_is_taken_again(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    mine = _take(store, "me", ttl=0.3)
    assert mine is not None
    with heartbeat(store, mine, "imaps://mail:993") as lost:
        store.client.flushall()
        eventually(
            lambda: store.client.get(f"migrator:lock:{NAME}") == "me",
            timeout=5,
            what="the heartbeat taking the lock again",
        )
        assert not lost.is_set()


def test_a_lock_taken_from_a_holder_that_never_let_go_says_so(redis_url: str) -> None:
    # Its appends may still be in flight: the new holder waits out the late-commit grace.
    store = StateStore.from_url(redis_url)
    died = _take(store, "died", ttl=0.2)
    assert died is not None and not died.inherited
    eventually(lambda: _take(store, "next") is not None, timeout=5, what="the lock expiring")
    taken = store.acquire((NAME,), "after", 30)  # "next" holds it now
    assert taken is None
    store.client.delete(f"migrator:lock:{NAME}")
    successor = store.acquire((NAME,), "successor", 30)
    assert successor is not None and successor.inherited
    store.unlock(successor)  # let go cleanly: the next one need not wait
    clean = store.acquire((NAME,), "clean", 30)
    assert clean is not None and not clean.inherited


def test_a_batchs_end_is_claimed_once_and_again_after_a_resume(redis_url: str) -> None:
    store = StateStore.from_url(redis_url)
    store.create_batch("b1", {}, [_job("00001", "a@x.test"), _job("00002", "b@x.test")])
    store.record_result("b1", "00001", MailboxResult(state=MailboxState.DONE))
    assert not store.claim_batch_end("b1")  # one mailbox still queued
    store.record_result("b1", "00002", MailboxResult(state=MailboxState.FAILED, error="no"))
    assert store.claim_batch_end("b1")
    assert not store.claim_batch_end("b1")  # told once
    store.reopen_batch("b1")
    store.set_state("b1", "00002", MailboxState.QUEUED)
    assert not store.claim_batch_end("b1")
    store.record_result("b1", "00002", MailboxResult(state=MailboxState.DONE))
    assert store.claim_batch_end("b1")


def test_the_event_log_keeps_the_newest_events_and_no_secret(redis_url: str) -> None:
    from migrator.events import EventKind
    from migrator.secrets import Secret
    from migrator.state.events import EVENTS_MAX

    store = StateStore.from_url(redis_url)
    secret = Secret("Ev3nt-Secr3t-Pw")
    for i in range(EVENTS_MAX + 5):
        store.note_event("b1", "00001", EventKind.PASS, f"pass {i}", number=i)
    store.note_event("b1", "00001", EventKind.END, f"failed: login {secret.reveal()} refused")
    events = store.events("b1", "00001")
    assert len(events) == EVENTS_MAX
    assert events[0].text == "pass 6" and events[-1].kind is EventKind.END
    assert secret.reveal() not in events[-1].text

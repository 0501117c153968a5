"""Into and out of Exchange through a real Celery worker: `migrator enqueue --target ews` and
`--source-type ews`, a worker process reaching the in-process test EWS server over HTTP."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from celerykit import enqueue_to_exchange, wait_for
from ews_server import EwsServer
from ewskit import IMAP_TO_EWS_FOLDER, SEEDED_TO_EWS_FOLDER, seed
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from support import EWS_PASSWORD, imaps, pop3s

from migrator.cli import main
from migrator.report import MailboxState
from migrator.state import StateStore

BIG_MAILBOX = {  # 1,050 messages, small ones: exchangelib parses about 1.5 s per MB
    "INBOX": 400,
    "Sent Messages": 200,
    "Spam": 100,
    "Projects/2024": 200,
    "INBOX/Important": 150,
}


def test_a_thousand_messages_from_imap_into_exchange_through_a_celery_worker(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    password = "Src-Pw-ews-41d2!"
    source, target = make_user(password), make_ews_mailbox()
    sent = fill(source, BIG_MAILBOX, password, size_hint=1500)
    assert len(sent) >= 1000
    workers.start()
    batch_id = enqueue_to_exchange(
        tmp_path, ews, imaps(dovecot), [(source, password, target)],
        "--ca-file", str(tls_files.ca_cert),
    )  # fmt: skip

    (status,) = wait_for(
        StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"]), batch_id, timeout=300
    )

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == len(sent)
    for folder, path in IMAP_TO_EWS_FOLDER.items():
        items = ews.store.items_at(target, path)
        expected = {m.raw: m for m in sent if m.folder == folder}
        assert Counter(i.mime for i in items) == Counter(m.raw for m in sent if m.folder == folder)
        for item in items:
            assert item.received == expected[item.mime].internaldate
            assert item.is_read == ("\\Seen" in expected[item.mime].flags)
    assert password not in (tmp_path / "worker.log").read_text(errors="replace")


def test_exchange_to_exchange_with_a_meeting_and_a_contact_through_a_celery_worker(
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    source, target = make_ews_mailbox(), make_ews_mailbox()
    seeded = seed(ews, source)
    workers.start()
    batch_id = enqueue_to_exchange(
        tmp_path, ews, f"http://127.0.0.1:{ews.port}", [(source, EWS_PASSWORD, target)],
        "--source-type", "ews", "--source-ews-version", "Exchange2016",
    )  # fmt: skip

    (status,) = wait_for(
        StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"]), batch_id, timeout=300
    )

    assert status.state is MailboxState.SYNCED, status
    assert (status.done_messages, status.copied_non_mail) == (len(seeded), 2)
    for folder, path in SEEDED_TO_EWS_FOLDER.items():
        items = ews.store.items_at(target, path)
        assert Counter(i.mime for i in items) == Counter(
            s.raw for s in seeded if s.folder == folder
        )
    assert [i.item_class for i in ews.store.messages(target, "calendar")] == ["IPM.Appointment"]
    assert [i.item_class for i in ews.store.messages(target, "contacts")] == ["IPM.Contact"]


def test_pop3_into_exchange_killed_mid_mailbox_then_resumed_copies_each_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    password = "Src-Pw-pop-ews-7c1!"
    source, target = make_user(password), make_ews_mailbox()
    sent = fill(source, {"INBOX": 600}, password, size_hint=1500)
    workers.start("worker1")
    batch_id = enqueue_to_exchange(
        tmp_path, ews, pop3s(dovecot), [(source, password, target)],
        "--source-type", "pop", "--ca-file", str(tls_files.ca_cert),
    )  # fmt: skip
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    wait_for(store, batch_id, lambda rows: rows and rows[0].done_messages >= 60, timeout=300)

    workers[0].kill()
    (killed,) = store.mailboxes(batch_id)
    assert killed.state is MailboxState.RUNNING and killed.done_messages < len(sent)
    assert main(["resume", batch_id, "--no-wait"]) == 0
    workers.start("worker2")
    (status,) = wait_for(store, batch_id, timeout=300)

    assert status.state is MailboxState.SYNCED, status
    inbox = Counter(item.mime for item in ews.store.messages(target, "inbox"))
    assert inbox == Counter(m.raw for m in sent)

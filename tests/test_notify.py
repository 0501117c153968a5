"""Notifications when a batch ends: a webhook and an SMTP sink the test runs on loopback,
told by the Celery worker that ends the batch's last mailbox."""

from __future__ import annotations

from pathlib import Path

from celerykit import enqueue
from opskit import SmtpSink, WebhookReceiver
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from support import batch_password, eventually, imaps

from migrator.state import StateStore


def test_a_webhook_and_an_email_tell_that_the_batch_ended(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
) -> None:
    password = batch_password("notify")
    good, bad = make_user(password), make_user(password)
    fill(good, {"INBOX": 6}, password, size_hint=1_000)
    pairs = [(good, password, make_user()), (bad, "not-" + password, make_user())]
    hook_token = "hook-Tok3n-5e5f"

    with WebhookReceiver() as hook, SmtpSink() as smtp:
        batch_id = enqueue(
            tmp_path, imaps(dovecot), imaps(dovecot), tls_files.ca_cert, pairs,
            "--notify-webhook", f"{hook.url}/hooks/{hook_token}",
            "--notify-email", "ops@example.test", "--notify-email", "helpdesk@example.test",
            "--smtp-server", f"127.0.0.1:{smtp.port}", "--smtp-from", "migrator@example.test",
            "--notify-each-mailbox",
        )  # fmt: skip
        workers.start("worker1", concurrency=2)
        eventually(lambda: bool(hook.bodies("batch_ended")), timeout=120, what="the webhook")
        eventually(lambda: bool(smtp.messages), timeout=30, what="the e-mail")

    (ended,) = hook.bodies("batch_ended")
    assert ended["batch_id"] == batch_id
    assert ended["states"] == {"synced": 1, "failed": 1}
    assert ended["totals"]["messages_copied"] == 6
    failed = [m for m in ended["mailboxes"] if m["state"] == "failed"]
    assert failed[0]["source"] == bad and "AUTHENTICATIONFAILED" in failed[0]["error"]
    assert {m["source"] for m in hook.bodies("mailbox_ended")} == {good, bad}
    assert hook.received[0]["path"] == f"/hooks/{hook_token}"

    (message,) = smtp.messages
    assert smtp.envelopes == [
        ("migrator@example.test", ["ops@example.test", "helpdesk@example.test"])
    ]
    assert message["Subject"] == f"migrator: batch {batch_id} ended: 1 failed, 1 synced"
    body = message.get_content()
    assert f"{bad}: failed:" in body and f"migrator report {batch_id}" in body
    assert password not in body

    # The webhook's URL is its token: never in Redis in plain text.
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    dump = [store.client.dump(k) for k in store.client.keys("*")]
    assert not any(hook_token.encode() in (d or b"") for d in dump)

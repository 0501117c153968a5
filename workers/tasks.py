"""One task per mailbox: a migration, or a forwarding change; each records its outcome."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init

from migrator.errors import BadJob, ConfigError
from migrator.forwarding import ForwardAction, ForwardState
from migrator.forwardjobs import execute_forwarding, key_of
from migrator.jobs import Job
from migrator.report import MailboxState
from migrator.runner import MailboxBusy, execute_job, lock_ttl
from migrator.secrets import SecretBox
from migrator.state import StateStore
from migrator.syncstate import PassRequest
from workers.app import app, redis_url
from workers.dispatch import CeleryDispatcher

log = logging.getLogger(__name__)


def _refuse_to_start_without_a_key(**_: Any) -> None:
    """A worker whose MIGRATOR_SECRET_KEY is missing or not a Fernet key could open no
    payload: it stops before it takes a task, in one line (SystemExit passes through
    Celery's signal dispatch, which logs and swallows any Exception)."""
    try:
        SecretBox.from_env()
    except ConfigError as exc:
        raise SystemExit(f"migrator worker not started: {exc}") from None


worker_init.connect(_refuse_to_start_without_a_key, weak=False)


class MailboxFailed(Exception):
    """Raised by the task of a mailbox that ended failed or not ready, after its outcome
    is recorded: Celery (and Flower) show the task as failed, with the mailbox's error.
    Expected (`throws`): logged in one line, no traceback, never retried."""


def task_name(batch_id: str, job_id: str, source: str = "") -> str:
    """The name a mailbox's task shows in logs, events and Flower (Celery's shadow)."""
    return f"migrate {batch_id}/{job_id} {source}".rstrip()


def send_mailbox(batch_id: str, job_id: str, source: str = "", request: str | None = None) -> None:
    """One mailbox's task: its first pass, or the pass `request` asks for (PassRequest)."""
    args = [batch_id, job_id] if request is None else [batch_id, job_id, request]
    migrate_mailbox.apply_async(args=args, shadow=task_name(batch_id, job_id, source))


@app.task(  # type: ignore[untyped-decorator]
    bind=True, name="migrator.migrate_mailbox", max_retries=None, throws=(MailboxFailed,)
)
def migrate_mailbox(
    self: Any, batch_id: str, job_id: str, request_json: str | None = None
) -> dict[str, Any]:
    """One pass over one mailbox: the first (copy) pass, or the one `request_json` asks
    for (syncstate.PassRequest: `migrator sync`, `migrator complete`)."""
    store = StateStore.from_url(redis_url())
    try:
        request = PassRequest.from_json(request_json)
    except BadJob as exc:
        store.set_state(batch_id, job_id, MailboxState.FAILED, error=str(exc), code=exc.code.value)
        raise MailboxFailed(f"failed: {exc}") from None
    try:
        box = SecretBox.from_env()
    except ConfigError as exc:
        # Without a usable key no password opens: the mailbox fails and says why,
        # instead of staying `queued` while `migrator run` waits for it.
        status = store.mailbox(batch_id, job_id)
        if status is not None and not status.state.copied:
            store.set_state(
                batch_id, job_id, MailboxState.FAILED, error=str(exc), code=exc.code.value
            )
        log.error("batch %s job %s: %s", batch_id, job_id, exc)
        raise MailboxFailed(f"failed: {exc}") from None
    try:
        result = execute_job(store, batch_id, job_id, box, request=request)
    except MailboxBusy as exc:
        # Another worker has it, or a killed worker's lock has not expired yet.
        raise self.retry(exc=exc, countdown=lock_ttl()) from exc
    if result is None:
        return {"batch_id": batch_id, "job_id": job_id, "state": "skipped"}
    if result.state in (MailboxState.FAILED, MailboxState.NOT_READY):
        raise MailboxFailed(f"{result.state.value}: {result.error}")
    if result.state is MailboxState.PAUSED and result.resume_at is not None:
        # A daily cap: the mailbox runs again by itself when it has room.
        CeleryDispatcher().send_mailbox_at(redis_url(), batch_id, job_id, result.resume_at)
    return {
        "batch_id": batch_id,
        "job_id": job_id,
        "state": result.state.value,
        "copied_messages": result.copied_messages,
        "left_messages": result.left_messages,
    }


@app.task(name="migrator.forwarding")  # type: ignore[untyped-decorator]
def forwarding(action: str, payload_json: str, request: str) -> dict[str, Any]:
    """Set, remove or check the forwarding of one source mailbox; idempotent, so a
    redelivered task does no harm.  The payload's passwords are sealed, bound to their use."""
    store = StateStore.from_url(redis_url())
    try:
        job = Job.from_json(payload_json)
    except BadJob as exc:  # nothing names the mailbox well enough to record it under
        log.error("forwarding task refused: %s", exc)
        return {"state": ForwardState.FAILED.value, "method": ""}
    try:
        box = SecretBox.from_env()
    except ConfigError as exc:
        store.record_forwarding(
            key_of(job),
            {
                "source": job.source.identity,
                "line": str(job.line),
                "action": action,
                "state": ForwardState.FAILED.value,
                "method": "",
                "target": "",
                "detail": str(exc),
                "request": request,
            },
        )
        log.error("forwarding %s: %s", job.source.identity, exc)
        return {"state": ForwardState.FAILED.value, "method": ""}
    outcome = execute_forwarding(store, ForwardAction(action), job, box, request=request)
    return {"state": outcome.state.value, "method": outcome.method}

"""One task per mailbox: parse the payload reference, call migrator, record the outcome."""

from __future__ import annotations

from typing import Any

from migrator.runner import MailboxBusy, execute_job, lock_ttl
from migrator.secrets import SecretBox
from migrator.state import StateStore
from workers.app import app, redis_url


@app.task(bind=True, name="migrator.migrate_mailbox", max_retries=None)  # type: ignore[untyped-decorator]
def migrate_mailbox(self: Any, batch_id: str, job_id: str) -> dict[str, Any]:
    store = StateStore.from_url(redis_url())
    try:
        result = execute_job(store, batch_id, job_id, SecretBox.from_env())
    except MailboxBusy as exc:
        # Another worker has it, or a killed worker's lock has not expired yet.
        raise self.retry(exc=exc, countdown=lock_ttl()) from exc
    if result is None:
        return {"batch_id": batch_id, "job_id": job_id, "state": "skipped"}
    return {
        "batch_id": batch_id,
        "job_id": job_id,
        "state": result.state.value,
        "copied_messages": result.copied_messages,
        "left_messages": result.left_messages,
    }

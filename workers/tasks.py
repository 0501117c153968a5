"""One task per mailbox: a migration, or a forwarding change; each records its outcome."""

from __future__ import annotations

import json
from typing import Any

from migrator.forwarding import ForwardAction
from migrator.forwardjobs import execute_forwarding
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


@app.task(name="migrator.forwarding")  # type: ignore[untyped-decorator]
def forwarding(action: str, payload_json: str, request: str) -> dict[str, Any]:
    """Set, remove or check the forwarding of one source mailbox; idempotent, so a
    redelivered task does no harm.  The payload's passwords are sealed, bound to their use."""
    store = StateStore.from_url(redis_url())
    payload = json.loads(payload_json)
    outcome = execute_forwarding(
        store, ForwardAction(action), payload, SecretBox.from_env(), request=request
    )
    return {"state": outcome.state.value, "method": outcome.method}

"""The Celery dispatcher the `migrator` command hands to the core (migrator.dispatch)."""

from __future__ import annotations

from collections.abc import Sequence


class CeleryDispatcher:
    def send_mailboxes(
        self, redis_url: str, batch_id: str, job_ids: Sequence[str], request: str | None = None
    ) -> None:
        from workers.app import app  # Celery is imported only where a broker is used
        from workers.tasks import migrate_mailbox

        app.conf.update(broker_url=redis_url, result_backend=redis_url)
        for job_id in job_ids:
            if request is None:
                migrate_mailbox.apply_async(args=[batch_id, job_id])
            else:
                migrate_mailbox.apply_async(args=[batch_id, job_id, request])

    def send_forwarding(
        self, redis_url: str, action: str, jobs_json: Sequence[str], request: str
    ) -> None:
        from workers.app import app
        from workers.tasks import forwarding

        app.conf.update(broker_url=redis_url, result_backend=redis_url)
        for job_json in jobs_json:
            forwarding.apply_async(args=[action, job_json, request])

"""The Celery dispatcher the `migrator` command hands to the core (migrator.dispatch)."""

from __future__ import annotations

from collections.abc import Sequence


class CeleryDispatcher:
    def send_mailboxes(
        self, redis_url: str, batch_id: str, job_ids: Sequence[str], request: str | None = None
    ) -> None:
        from workers.app import app  # Celery is imported only where a broker is used
        from workers.tasks import send_mailbox

        app.conf.update(broker_url=redis_url, result_backend=redis_url)
        sources = _sources(redis_url, batch_id)
        for job_id in job_ids:
            send_mailbox(batch_id, job_id, sources.get(job_id, ""), request)

    def send_mailbox_at(self, redis_url: str, batch_id: str, job_id: str, when: float) -> None:
        """Queue one mailbox's task to run at `when` (epoch seconds): a paused mailbox
        (a daily cap) going on by itself."""
        from datetime import UTC, datetime

        from workers.app import app
        from workers.tasks import migrate_mailbox

        app.conf.update(broker_url=redis_url, result_backend=redis_url)
        migrate_mailbox.apply_async(args=[batch_id, job_id], eta=datetime.fromtimestamp(when, UTC))

    def send_forwarding(
        self, redis_url: str, action: str, jobs_json: Sequence[str], request: str
    ) -> None:
        from workers.app import app
        from workers.tasks import forwarding

        app.conf.update(broker_url=redis_url, result_backend=redis_url)
        for job_json in jobs_json:
            forwarding.apply_async(args=[action, job_json, request])


def _sources(redis_url: str, batch_id: str) -> dict[str, str]:
    """Each job's source mailbox, for its task's name."""
    from migrator.state import StateStore

    return {r.job_id: r.source_identity for r in StateStore.from_url(redis_url).mailboxes(batch_id)}

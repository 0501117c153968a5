"""How `enqueue`, `resume` and `forwarding` hand jobs to the workers: a Dispatcher handed
in by whoever starts the command line (the `migrator` console script hands in
workers.dispatch's Celery one), so the core never imports the worker layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from migrator.errors import ConfigError


class Dispatcher(Protocol):
    def send_mailboxes(
        self, redis_url: str, batch_id: str, job_ids: Sequence[str], request: str | None = None
    ) -> None:
        """Queue one task per mailbox of the batch; `request`: the pass to run
        (syncstate.PassRequest as JSON), the first one where None."""
        ...

    def send_forwarding(
        self, redis_url: str, action: str, jobs_json: Sequence[str], request: str
    ) -> None:
        """Queue one forwarding task per job."""
        ...

    def send_mailbox_at(self, redis_url: str, batch_id: str, job_id: str, when: float) -> None:
        """Queue one mailbox's task to run at `when` (epoch seconds): a paused mailbox."""
        ...


_dispatcher: Dispatcher | None = None


def use(dispatcher: Dispatcher) -> None:
    """Make `dispatcher` the one the commands send jobs with."""
    global _dispatcher
    _dispatcher = dispatcher


def dispatcher() -> Dispatcher:
    if _dispatcher is None:
        raise ConfigError(
            "no task dispatcher: start migrator through its `migrator` command "
            "(workers.main), which sends jobs to the Celery workers"
        )
    return _dispatcher

"""Celery configuration: broker and result backend from MIGRATOR_REDIS_URL, and a Redis
transport whose channels survive Redis going away under them."""

from __future__ import annotations

import logging
import os
from queue import Empty
from typing import Any

from celery import Celery, signals
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from migrator.runner import lock_ttl
from migrator.secrets import install_redaction
from migrator.state import StateStore
from workers.reaper import Reaper

REDIS_URL_ENV = "MIGRATOR_REDIS_URL"
QUEUE = "migrator"

log = logging.getLogger(__name__)


def redis_url() -> str:
    return os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0")


# imapclient logs every line and literal at DEBUG (message bodies, the AUTHENTICATE token):
# a worker run with --loglevel DEBUG must still not write them.
logging.getLogger("imapclient").setLevel(logging.INFO)


class _Channel(kombu_redis.Channel):
    """kombu's Redis channel, whose close survives the connection it is closing.

    A worker with a free process waits in BRPOP. When Redis goes away, Celery collects
    the connection: it closes this channel, then detaches the transport from its broker
    URL. kombu's close first reads the pending BRPOP answer, and on a dead socket that
    read raises, so the close stops there. Celery then closes the channel a second time;
    by then the channel must rebuild its Redis pool from the detached transport to put
    back its unacknowledged messages, and fails with AttributeError ('NoneType' object
    has no attribute 'hostname'): not a connection error, so the worker stops
    ("Unrecoverable error"), leaving every mailbox not yet started without a worker.
    Here the close goes on past that read, while the transport still knows its broker.
    """

    def close(self) -> None:
        if self._in_poll:
            try:
                self._brpop_read()  # type: ignore[no-untyped-call]
            except Empty:
                pass
            except self.connection_errors as exc:  # the socket is gone: nothing to read
                log.debug("BRPOP answer lost with the broker connection: %r", exc)
        super().close()  # type: ignore[no-untyped-call]


class RedisTransport(kombu_redis.Transport):
    """The Redis transport with the channel above."""

    Channel = _Channel


# Behind the redis:// and rediss:// schemes, rather than named by broker_transport: the
# scheme still decides TLS (a rediss:// URL without options would lose it otherwise).
TRANSPORT_ALIASES["redis"] = TRANSPORT_ALIASES["rediss"] = f"{__name__}:RedisTransport"

app = Celery("migrator", include=["workers.tasks"])
app.conf.update(
    broker_url=redis_url(),
    result_backend=redis_url(),
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    # A killed worker's mailbox goes back to the queue (rq would call it "abandoned").
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # A mailbox can take hours; Redis redelivers an unacknowledged task after this long.
    # The mailbox lock keeps a redelivered copy from running beside the first.
    broker_transport_options={"visibility_timeout": 6 * 3600},
    # Outcomes live in migrator's own state keys; Celery's result records add nothing.
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    # A Redis restart costs time, never a worker: reconnect for as long as it takes (Celery
    # gives up after 100 attempts, some 45 minutes, by default).
    broker_connection_max_retries=None,
    # A copy goes on through a broker outage (its own Redis calls retry, its lock and
    # checkpoints fence it); cancelling it would throw away the pass at every restart.
    # Celery 6 turns this on by default.
    worker_cancel_long_running_tasks_on_connection_loss=False,
    worker_hijack_root_logger=False,
)


def _redact_logs(logger: logging.Logger, **_: object) -> None:
    """Celery's handlers (the root's, the task logger's) write no live secret: not in a
    message, not in a traceback."""
    install_redaction(logger)


signals.after_setup_logger.connect(_redact_logs, weak=False)
signals.after_setup_task_logger.connect(_redact_logs, weak=False)

_reapers: list[Reaper] = []


def _requeue(batch_id: str, job_id: str) -> None:
    from workers.tasks import send_mailbox  # the tasks module imports this one

    row = StateStore.from_url(redis_url()).mailbox(batch_id, job_id)
    send_mailbox(batch_id, job_id, row.source_identity if row else "")


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _start_reaper(**_: Any) -> None:
    """One reaper per worker, in its main process (not in each process of the pool)."""
    if not _reapers:
        reaper = Reaper(StateStore.from_url(redis_url()), lock_ttl(), _requeue)
        reaper.start()
        _reapers.append(reaper)


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _stop_reaper(**_: Any) -> None:
    while _reapers:
        _reapers.pop().stop()

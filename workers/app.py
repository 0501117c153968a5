"""Celery configuration: broker and result backend from MIGRATOR_REDIS_URL."""

from __future__ import annotations

import logging
import os

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

from migrator.secrets import install_redaction

REDIS_URL_ENV = "MIGRATOR_REDIS_URL"
QUEUE = "migrator"


def redis_url() -> str:
    return os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379/0")


# imapclient logs every line and literal at DEBUG (message bodies, the AUTHENTICATE token):
# a worker run with --loglevel DEBUG must still not write them.
logging.getLogger("imapclient").setLevel(logging.INFO)

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
    worker_hijack_root_logger=False,
)


def _redact_logs(logger: logging.Logger, **_: object) -> None:
    """Celery's handlers (the root's, the task logger's) write no live secret: not in a
    message, not in a traceback."""
    install_redaction(logger)


after_setup_logger.connect(_redact_logs, weak=False)
after_setup_task_logger.connect(_redact_logs, weak=False)

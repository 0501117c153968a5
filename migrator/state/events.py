"""The event log of each mailbox (ev:{bid}:{jid}), bounded: StateStore's mixin, and the
EventSink a worker hands the copier."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from migrator.events import Event, EventKind
from migrator.secrets import redact
from migrator.state.keys import _k

# Events kept per mailbox: the newest; a mailbox that reconnects all night keeps its end.
EVENTS_MAX = 500


class EventLog:
    """StateStore's event logs."""

    _r: redis.Redis

    def note_event(
        self, batch_id: str, job_id: str, kind: EventKind, text: str, **data: Any
    ) -> None:
        """Append one event (its text redacted) and drop the oldest past EVENTS_MAX."""
        event = Event(time.time(), kind, redact(text), data)
        key = _k("ev", batch_id, job_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(event.as_dict()))
        pipe.ltrim(key, -EVENTS_MAX, -1)
        pipe.execute()

    def events(self, batch_id: str, job_id: str) -> list[Event]:
        """The mailbox's events, oldest first."""
        raw = self._r.lrange(_k("ev", batch_id, job_id), 0, -1)
        return [Event.from_dict(json.loads(str(item))) for item in raw]

    def event_sink(self, batch_id: str, job_id: str) -> MailboxEvents:
        return MailboxEvents(self, batch_id, job_id)


class MailboxEvents:
    """The EventSink of one mailbox: what the copier and the runner tell, into its log."""

    def __init__(self, log: EventLog, batch_id: str, job_id: str) -> None:
        self._log = log
        self._batch_id = batch_id
        self._job_id = job_id

    def note(self, kind: EventKind, text: str, **data: Any) -> None:
        self._log.note_event(self._batch_id, self._job_id, kind, text, **data)

"""A mailbox's event log, as values: what happened to one mailbox and when (pure).

The copier and the runner tell an `EventSink`; state/events.py keeps the log in Redis,
bounded, and `migrator report`, the dashboard and notifications read it back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol


class EventKind(enum.StrEnum):
    START = "start"  # a worker took the mailbox
    PASS = "pass"  # a copy pass began (the first, or one after a reconnect)
    RECONNECT = "reconnect"  # a pass broke on a transient error; the next one reconnects
    THROTTLE = "throttle"  # the server asked us to wait (seconds in `data`)
    SKIP = "skip"  # a message the target refused, named with why
    QUOTA_STOP = "quota_stop"  # the target is full: the newest mail is in, the rest left
    END = "end"  # the mailbox ended: its state, counts and error


@dataclass(frozen=True)
class Event:
    time: float  # epoch seconds
    kind: EventKind
    text: str
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "kind": self.kind.value, "text": self.text, "data": self.data}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        return cls(
            time=float(raw.get("time", 0.0)),
            kind=EventKind(raw.get("kind", EventKind.END.value)),
            text=str(raw.get("text", "")),
            data=dict(raw.get("data") or {}),
        )


class EventSink(Protocol):
    """Where the copier and the runner tell what happened to one mailbox."""

    def note(self, kind: EventKind, text: str, **data: Any) -> None: ...


class NoEvents:
    """An EventSink that keeps nothing (the copier's default)."""

    def note(self, kind: EventKind, text: str, **data: Any) -> None:
        return None

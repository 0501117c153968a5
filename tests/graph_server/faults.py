"""Fault switches of the test Graph server, consulted once per HTTP request (a $batch is
one): Graph's throttling (429 with Retry-After), 503, a dropped connection."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    kind: str  # "none", "status", "drop", "drop_after"
    status: int = 0
    retry_after: int | None = None


NONE = Decision("none")


class Faults:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._throttle_every = 0
        self._throttle_retry_after = 1
        self._status_once: list[tuple[int, int | None]] = []
        self._drop_once: tuple[str, str] | None = None  # (kind, part of the path)
        self.calls = 0
        self.injected: Counter[str] = Counter()

    def throttle_every(self, n: int, retry_after: int = 1) -> None:
        """Answer every `n`-th request 429 Too Many Requests with Retry-After."""
        with self._lock:
            self._throttle_every, self._throttle_retry_after = n, retry_after
            self.calls = 0

    def status_once(self, status: int, retry_after: int | None = 1) -> None:
        """Answer the next request with `status` (503, 500, ...)."""
        with self._lock:
            self._status_once.append((status, retry_after))

    def drop_connection_once(self, *, after_processing: bool = False, where: str = "") -> None:
        """Close the connection without an answer to the next request whose path holds
        `where`; with `after_processing`, the request takes effect first (the client
        cannot know whether it did)."""
        with self._lock:
            self._drop_once = ("drop_after" if after_processing else "drop", where)

    def clear(self) -> None:
        with self._lock:
            self._throttle_every = 0
            self._status_once.clear()
            self._drop_once = None
            self.calls = 0
            self.injected.clear()

    def decide(self, path: str) -> Decision:
        with self._lock:
            self.calls += 1
            if self._drop_once is not None and self._drop_once[1] in path:
                kind, self._drop_once = self._drop_once[0], None
                self.injected[kind] += 1
                return Decision(kind)
            if self._status_once:
                status, retry_after = self._status_once.pop(0)
                self.injected[str(status)] += 1
                return Decision("status", status, retry_after)
            if self._throttle_every and self.calls % self._throttle_every == 0:
                self.injected["429"] += 1
                return Decision("status", 429, self._throttle_retry_after)
            return NONE

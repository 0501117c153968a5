"""Faults the tests switch on: Exchange's ways of failing, injected at the HTTP boundary."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """What the server does with one authenticated EWS call before handling it."""

    kind: str  # "none", "busy", "status", "drop", "drop_after"
    back_off_ms: int = 0
    status: int = 0
    retry_after: int | None = None


NONE = Decision("none")


class Faults:
    """Fault switches, consulted once per EWS call. ``injected`` counts what was actually done."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy_every = 0
        self._busy_back_off_ms = 0
        self._status_once: tuple[int, int | None] | None = None
        self._drop_once: str | None = None
        self._quota_after: int | None = None
        self.calls = 0
        self.injected: Counter[str] = Counter()

    def busy_every(self, n: int, back_off_ms: int = 200) -> None:
        """Answer every ``n``-th call with ErrorServerBusy carrying BackOffMilliseconds."""
        with self._lock:
            self._busy_every, self._busy_back_off_ms = n, back_off_ms

    def http_status_once(self, status: int, *, retry_after: int | None = 1) -> None:
        """Answer the next call with a bare HTTP ``status`` (401 or 500) and no SOAP. exchangelib's
        FaultTolerance waits ``Retry-After`` seconds, else its RETRY_WAIT of 10 s."""
        with self._lock:
            self._status_once = (status, retry_after)

    def drop_connection_once(self, *, after_processing: bool = False) -> None:
        """Close the socket without answering the next call; with ``after_processing`` the call
        takes effect first (the client cannot know, the nasty case for duplicates)."""
        with self._lock:
            self._drop_once = "drop_after" if after_processing else "drop"

    def quota_exceeded_after(self, n_items: int) -> None:
        """Accept ``n_items`` more items (CreateItem, UploadItems), then ErrorQuotaExceeded."""
        with self._lock:
            self._quota_after = n_items

    def clear(self) -> None:
        with self._lock:
            self._busy_every = 0
            self._status_once = self._drop_once = self._quota_after = None

    def next_call(self) -> Decision:
        with self._lock:
            self.calls += 1
            if self._status_once is not None:
                (status, retry_after), self._status_once = self._status_once, None
                self.injected[f"http_{status}"] += 1
                return Decision("status", status=status, retry_after=retry_after)
            if self._drop_once is not None:
                kind, self._drop_once = self._drop_once, None
                self.injected[kind] += 1
                return Decision(kind)
            if self._busy_every and self.calls % self._busy_every == 0:
                self.injected["busy"] += 1
                return Decision("busy", back_off_ms=self._busy_back_off_ms)
            return NONE

    def take_quota_slot(self) -> bool:
        """False when the injected quota is used up (and counts that as an injected fault)."""
        with self._lock:
            if self._quota_after is None:
                return True
            if self._quota_after > 0:
                self._quota_after -= 1
                return True
            self.injected["quota"] += 1
            return False

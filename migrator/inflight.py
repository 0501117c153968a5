"""Appends whose outcome a failed pass never learnt (the target may still commit them),
kept across the passes of one mailbox so the next pass waits before it indexes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class InFlight:
    """Appends whose outcome a failed pass never learnt: the target may still commit them.

    Kept across the passes of one mailbox; the next pass waits out the grace before it
    indexes the target, so messages committed late count as copied, not as to send.
    A worker that takes a mailbox over from one that died with it (or froze past its
    lock) starts with `inherited()`: that one's appends may be in flight too."""

    folders: set[str] = field(default_factory=set)  # target folders of the batch
    given_up: float | None = None  # time.monotonic() when the pass gave up on them
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def inherited(cls) -> InFlight:
        return cls(given_up=time.monotonic())

    def lost(self, folders: set[str]) -> None:
        with self._lock:  # connections of one pass fail side by side
            self.folders |= folders
            self.given_up = time.monotonic()

    def settle(self, grace: float, sleep: Callable[[float], None] = time.sleep) -> None:
        """Wait for what is left of `grace` since the appends were given up, then forget them."""
        if self.given_up is None:
            return
        left = self.given_up + grace - time.monotonic()
        if left > 0:
            log.warning(
                "appends %s may still be in flight: waiting %.1f s for a late commit "
                "before indexing the target",
                (
                    "to " + ", ".join(repr(f) for f in sorted(self.folders))
                    if self.folders
                    else "of the worker that held this mailbox before"
                ),
                left,
            )
            sleep(left)
        self.folders.clear()
        self.given_up = None

"""A source opened beside its target, its login held back until the target is open.

A target that cannot be opened leaves its source untouched: a copy pass opens the target
first (copier._open_both).  The source's connection, TLS handshake and greeting owe the
target nothing, though, so a connector that can (`Connector.gated_login`) makes them while
the target is opened, in a thread of the pass's, and waits in `hold_login()` right before
it sends the source its login: the pass lets it go on once the target is open, or stops
it there, the login never sent.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class TargetNotOpened(Exception):
    """Raised in the source's opening thread when its target could not be opened.  Not a
    MigrationError: the pass raises the target's own error, and drops this one."""


class LoginGate:
    """Decided once: open() lets the source log in, close() stops it before it does."""

    def __init__(self) -> None:
        self._decided = threading.Event()
        self._open = False

    def open(self) -> None:
        self._open = True
        self._decided.set()

    def close(self) -> None:
        self._decided.set()

    def wait(self) -> None:
        self._decided.wait()
        if not self._open:
            raise TargetNotOpened("the target could not be opened: no login to the source")


_this_thread = threading.local()


@contextlib.contextmanager
def gated(gate: LoginGate) -> Iterator[None]:
    """What this thread opens inside waits at `gate` before it logs in."""
    _this_thread.gate = gate
    try:
        yield
    finally:
        _this_thread.gate = None


def hold_login() -> None:
    """Called by a connector with `gated_login` right before it sends a login: returns at
    once, unless this thread opens a source beside its target (`gated`); then once the
    target is open, or raises TargetNotOpened if it could not be."""
    gate: LoginGate | None = getattr(_this_thread, "gate", None)
    if gate is not None:
        gate.wait()

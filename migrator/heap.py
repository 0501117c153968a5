"""The cyclic garbage collector held off the objects a copy keeps for its whole length.

CPython's collector walks every tracked object of the oldest generation whenever enough
new ones have survived: the modules, classes and functions imported at start (some
hundreds of thousands of objects) and, once a mailbox is listed, every `MessageRef` of
it (a million, in a large mailbox).  A copy allocates steadily (FETCH answers, batches,
checkpoints), so those walks recur all through it, and cost about a twentieth of the
copier's CPU on a 3,000-message mailbox, more as the listing grows.  None of those
objects becomes garbage in a cycle while the copy runs; `gc.freeze()` moves them to the
permanent generation, which no collection walks, and `gc.unfreeze()` hands them back
when the last copy of the process ends (a worker runs mailbox after mailbox: what one
copy leaves behind is collected as before).
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_holders = 0  # copies of this process inside `held()`


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within: what exists now is never walked by the collector (`settle` adds what
    exists later).  Copies side by side in one process share the hold; the last one out
    releases it."""
    global _holders
    with _lock:
        _holders += 1
        gc.freeze()
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if not _holders:
                gc.unfreeze()


def settle() -> None:
    """Hold what exists now as well (a listing just made), if a copy holds the heap."""
    with _lock:
        if _holders:
            gc.freeze()

"""Reading ahead in a thread, so that source reads and target writes overlap, with the
bytes waiting in between bounded."""

from __future__ import annotations

import collections
import threading
from collections.abc import Iterator
from typing import Any

from migrator.plan import MessageRef


def prefetched(
    messages: Iterator[tuple[MessageRef, bytes]], max_bytes: int
) -> Iterator[tuple[MessageRef, bytes]]:
    """Read ahead in a thread so source reads and target writes overlap.

    At most `max_bytes` wait in between (always at least one message, however big),
    so memory stays flat.  An error in the reader reaches the consumer in order."""
    lock = threading.Condition()
    waiting: collections.deque[tuple[MessageRef, bytes]] = collections.deque()
    state: dict[str, Any] = {"bytes": 0, "done": False, "error": None, "stop": False}

    def read() -> None:
        try:
            for ref, body in messages:
                with lock:
                    while state["bytes"] >= max_bytes and waiting and not state["stop"]:
                        lock.wait()
                    if state["stop"]:
                        return
                    waiting.append((ref, body))
                    state["bytes"] += len(body)
                    lock.notify_all()
        except BaseException as exc:  # handed to the consumer, raised there
            with lock:
                state["error"] = exc
        finally:
            with lock:
                state["done"] = True
                lock.notify_all()

    reader = threading.Thread(target=read, name="prefetch", daemon=True)
    reader.start()
    try:
        while True:
            with lock:
                while not waiting and not state["done"]:
                    lock.wait()
                if waiting:
                    ref, body = waiting.popleft()
                    state["bytes"] -= len(body)
                    lock.notify_all()
                elif state["error"] is not None:
                    raise state["error"]
                else:
                    return
            yield ref, body
            del body
    finally:
        with lock:
            state["stop"] = True
            lock.notify_all()
        reader.join()

"""What keeps a running mailbox to itself and its servers within their caps: the
connection slots (on the source server, and on a target endpoint that has a cap of its
own), and the heartbeat that keeps slots and mailbox locks alive while the copier works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from migrator.state import Lease, StateStore

log = logging.getLogger(__name__)


class MailboxBusy(Exception):
    """Another worker holds the mailbox (or every connection slot of its server)."""


@contextmanager
def slot(
    store: StateStore, server: str, owner: str, cap: int, ttl: float, wait: float
) -> Iterator[None]:
    deadline = time.monotonic() + wait
    while not store.acquire_slot(server, owner, cap, ttl):
        if time.monotonic() > deadline:
            raise MailboxBusy(f"all {cap} connection slots of {server} are in use")
        time.sleep(0.5)
    try:
        yield
    finally:
        store.release_slot(server, owner)


class ExtraSlots:
    """The copier's ConnectionSlots: a mailbox's extra connections to its source server
    take slots of their own (`OWNER+N`), beside the one the mailbox holds, never waiting
    for one; the mailbox's heartbeat keeps them alive."""

    def __init__(self, store: StateStore, server: str, owner: str, cap: int, ttl: float) -> None:
        self._store, self._server, self._owner, self._cap, self._ttl = (
            store,
            server,
            owner,
            cap,
            ttl,
        )
        self._held: list[str] = []
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        taken = 0
        while taken < wanted:
            with self._lock:
                name = f"{self._owner}+{len(self._held) + 1}"
            if not self._store.acquire_slot(self._server, name, self._cap, self._ttl):
                break
            with self._lock:
                self._held.append(name)
            taken += 1
        return taken

    def give_back(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for name in held:
            self._store.release_slot(self._server, name)

    def refresh(self) -> None:
        with self._lock:
            held = list(self._held)
        for name in held:
            self._store.refresh_slot(self._server, name, self._ttl)


@contextmanager
def heartbeat(
    store: StateStore,
    lease: Lease,
    server: str,
    extra: ExtraSlots | None = None,
    row: tuple[str, str] | None = None,
) -> Iterator[threading.Event]:
    """Keep the mailbox's locks and the connection slot alive while the copier works; a
    killed worker stops beating and both expire within the lease's TTL.

    A lock that vanished with Redis's data is taken again; one that another worker holds,
    or held since (its epoch moved on), sets the event it yields, and the copier stops
    before its next batch (every batch and checkpoint is fenced by the same test). With
    `row` (batch id, job id), each beat is also noted on the mailbox row, with the names
    of its locks, where the workers' reapers look for dead workers."""
    stop = threading.Event()
    lost = threading.Event()

    def beat() -> None:
        while not stop.wait(lease.ttl / 3):
            try:
                if not store.renew(lease):
                    lost.set()
                store.refresh_slot(server, lease.owner, lease.ttl)
                if extra is not None:
                    extra.refresh()
                if row is not None:
                    store.beat(*row, lease.names)
            except Exception:  # a Redis blip must not kill the copy; the next beat retries
                log.warning("heartbeat for mailbox lock failed", exc_info=True)

    if row is not None:
        store.beat(*row, lease.names)
    thread = threading.Thread(target=beat, name=f"heartbeat-{lease.owner[-8:]}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=5)


@contextmanager
def target_slot(
    store: StateStore, cap: tuple[str, int] | None, lease: Lease, wait: float
) -> Iterator[None]:
    """A target whose connector caps concurrent mailboxes on an endpoint or tenant (an
    Exchange tenant throttles): one slot per mailbox there, like the source server's."""
    if cap is None:
        yield
        return
    name, size = cap
    with slot(store, name, lease.owner, size, lease.ttl, wait), heartbeat(store, lease, name):
        yield

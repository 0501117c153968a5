"""Each worker's reaper: a mailbox whose worker died (SIGKILL, a lost machine) goes back to
the queue within a minute, without anyone running `migrator resume`.

The heartbeat of a running mailbox (runner._heartbeat) refreshes its lock and notes the
time on its row every lock TTL / 3. When a mailbox is still `running` but has not beaten
for a whole TTL and its lock has expired, nobody copies it: the reaper claims it in one
Redis script (so of all the workers' reapers one only requeues it), marks it `queued`,
and sends its task again. The task is idempotent: a done mailbox returns at once, and the
mailbox lock keeps two copies apart.

Celery would redeliver the killed worker's task too, but only after the broker's
visibility timeout (hours); that late copy finds the mailbox done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from migrator.state import StateStore

log = logging.getLogger(__name__)

# StateStore retries a command for about 30 s, sleeping at most 5 s between tries: a
# heartbeat that was waiting for a restarted Redis beats again within this long.
RETRY_GRACE = 5.0


def reap_once(
    store: StateStore,
    stale_after: float,
    requeue: Callable[[str, str], None],
    *,
    redis_up_for: float | None = None,
) -> list[tuple[str, str]]:
    """Requeue every mailbox whose worker stopped beating `stale_after` seconds ago;
    the (batch id, job id) of those this call requeued.

    Right after Redis (re)started, every heartbeat looks old: nothing is taken until
    Redis has been up `redis_up_for` seconds (stale_after + RETRY_GRACE), long enough for
    the live workers to beat again."""
    if redis_up_for is None:
        redis_up_for = stale_after + RETRY_GRACE
    if store.uptime() < redis_up_for:
        return []
    requeued = []
    for batch_id, job_id in store.stale_mailboxes(stale_after):
        if not store.claim_stale(batch_id, job_id, stale_after):
            continue
        try:
            requeue(batch_id, job_id)
        except Exception:
            store.release_claim(batch_id, job_id)
            raise
        log.warning(
            "batch %s job %s: no heartbeat for %.1f s and its lock is free; requeued",
            batch_id,
            job_id,
            stale_after,
        )
        requeued.append((batch_id, job_id))
    return requeued


class Reaper:
    """reap_once every `stale_after / 3` seconds in a thread, until stop()."""

    def __init__(
        self, store: StateStore, stale_after: float, requeue: Callable[[str, str], None]
    ) -> None:
        self._store = store
        self._stale_after = stale_after
        self._requeue = requeue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailbox-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._stale_after / 3):
            try:
                reap_once(self._store, self._stale_after, self._requeue)
            except Exception:  # Redis away: the next round looks again
                log.warning("looking for mailboxes of dead workers failed", exc_info=True)

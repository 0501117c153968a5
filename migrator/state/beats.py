"""Heartbeats of running mailboxes, and requeuing the mailboxes of dead workers.

mbx:{bid}:{jid} "heartbeat" is the time of the last beat of the worker copying the
mailbox, and beats (zset "{bid}:{jid}" -> that time) lists the mailboxes to watch;
both read Redis's clock, so the workers' clocks need not agree.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis

from migrator.report import MailboxState
from migrator.state.keys import _k


class Heartbeats:
    """StateStore's heartbeats (the beats zset, and heartbeat and locks on mbx rows)."""

    _r: redis.Redis

    if TYPE_CHECKING:

        def job_ids(self, batch_id: str) -> list[str]: ...  # StateStore's (store.py)

    def beat(self, batch_id: str, job_id: str, locks: Sequence[str]) -> None:
        """The worker copying this mailbox is alive: note it on the row (not one Redis
        lost), with the names of the locks it holds the mailbox by."""
        script = self._r.register_script(_BEAT)
        script(
            keys=[_k("mbx", batch_id, job_id), _k("beats")],
            args=[f"{batch_id}:{job_id}", json.dumps(list(locks))],
        )

    def heartbeat_ages(self, batch_id: str) -> dict[str, float]:
        """Seconds since the last heartbeat of each running mailbox, by job id."""
        ids = self.job_ids(batch_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.time()
        for job_id in ids:
            pipe.hmget(_k("mbx", batch_id, job_id), ["state", "heartbeat"])
        (seconds, micros), *rows = pipe.execute()
        now = int(seconds) + int(micros) / 1e6
        return {
            job_id: max(0.0, now - float(beat))
            for job_id, (state, beat) in zip(ids, rows, strict=True)
            if state == MailboxState.RUNNING.value and beat
        }

    def uptime(self) -> float:
        """Seconds since Redis started: a restarted Redis gives every worker time to beat."""
        return float(self._r.info("server")["uptime_in_seconds"])

    def stale_mailboxes(self, stale_after: float) -> list[tuple[str, str]]:
        """(batch id, job id) of each watched mailbox without a beat for `stale_after` s."""
        script = self._r.register_script(_STALE)
        members = script(keys=[_k("beats")], args=[stale_after])
        return [(b, j) for b, _, j in (str(m).rpartition(":") for m in members)]

    def claim_stale(self, batch_id: str, job_id: str, stale_after: float) -> bool:
        """Take a dead worker's mailbox back to `queued`, atomically, so that of all the
        callers one only requeues it: it must still be running, without a beat for
        `stale_after` s, and its lock free.  A mailbox no longer running leaves the watch."""
        row = _k("mbx", batch_id, job_id)
        locks = [_k("lock", name) for name in self.lock_names(batch_id, job_id)]
        if not locks:
            return False  # never beaten: not on the watch either
        script = self._r.register_script(_CLAIM_STALE)
        return bool(
            script(keys=[row, _k("beats"), *locks], args=[f"{batch_id}:{job_id}", stale_after])
        )

    def lock_names(self, batch_id: str, job_id: str) -> list[str]:
        """The names of the locks the last worker to beat for this mailbox held it by."""
        raw = self._r.hget(_k("mbx", batch_id, job_id), "locks")
        try:
            names = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [str(name) for name in names] if isinstance(names, list) else []

    def any_locked(self, names: Sequence[str]) -> bool:
        """Whether any worker holds one of these locks."""
        return bool(names) and bool(self._r.exists(*(_k("lock", name) for name in names)))

    def release_claim(self, batch_id: str, job_id: str) -> None:
        """Undo claim_stale when the task could not be sent: the next look takes it again."""
        row = _k("mbx", batch_id, job_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(row, "state", MailboxState.RUNNING.value)
        pipe.hincrby(row, "requeued", -1)
        pipe.zadd(_k("beats"), {f"{batch_id}:{job_id}": 0})
        pipe.execute()


# The row must exist: a worker whose batch Redis lost does not make a partial row of it.
_BEAT = """
if redis.call('exists', KEYS[1]) == 0 then
  return 0
end
local t = redis.call('time')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('hset', KEYS[1], 'heartbeat', string.format('%.3f', now), 'locks', ARGV[2])
redis.call('zadd', KEYS[2], now, ARGV[1])
return 1
"""

_STALE = """
local t = redis.call('time')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('zrangebyscore', KEYS[1], '-inf', now - tonumber(ARGV[1]))
"""

# KEYS: the mailbox row, the beats zset, the mailbox lock. Requeued: state queued, and
# "requeued" counts how often that happened.
_CLAIM_STALE = """
if redis.call('hget', KEYS[1], 'state') ~= 'running' then
  redis.call('zrem', KEYS[2], ARGV[1])
  return 0
end
local t = redis.call('time')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local beat = tonumber(redis.call('hget', KEYS[1], 'heartbeat') or '0') or 0
if now - beat < tonumber(ARGV[2]) then
  return 0
end
for i = 3, #KEYS do
  if redis.call('exists', KEYS[i]) == 1 then
    return 0
  end
end
redis.call('hset', KEYS[1], 'state', 'queued', 'updated', string.format('%.3f', now))
redis.call('hincrby', KEYS[1], 'requeued', 1)
redis.call('zrem', KEYS[2], ARGV[1])
return 1
"""

"""Connection caps: the slots on one server that every worker shares (conn:)."""

from __future__ import annotations

import time

import redis

from migrator.state.keys import _k


class Slots:
    """StateStore's connection slots: a sorted set of leases per canonical server."""

    _r: redis.Redis

    def acquire_slot(self, server: str, owner: str, cap: int, ttl: float) -> bool:
        """Take one of `cap` connection slots for `server`, shared by every worker."""
        script = self._r.register_script(_ACQUIRE_SLOT)
        now = time.time()
        return bool(script(keys=[_k("conn", server)], args=[owner, cap, now, now + ttl]))

    def refresh_slot(self, server: str, owner: str, ttl: float) -> None:
        self._r.zadd(_k("conn", server), {owner: time.time() + ttl}, xx=True)

    def release_slot(self, server: str, owner: str) -> None:
        self._r.zrem(_k("conn", server), owner)


# Drop expired leases (a killed worker's), then take a slot if one is free.
_ACQUIRE_SLOT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[3])
if redis.call('zscore', KEYS[1], ARGV[1]) then
  redis.call('zadd', KEYS[1], ARGV[4], ARGV[1])
  return 1
end
if redis.call('zcard', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('zadd', KEYS[1], ARGV[4], ARGV[1])
  return 1
end
return 0
"""

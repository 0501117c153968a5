"""Upload budgets: bytes sent to one mailbox within a sliding window, shared by every
worker (Microsoft Graph allows 150 MB of uploads per mailbox in 5 minutes)."""

from __future__ import annotations

import time
import uuid

import redis

from migrator.state.keys import _k


class Uploads:
    """StateStore's upload budgets: a sorted set per mailbox of `id:bytes` by the time
    they were sent, and their total beside it."""

    _r: redis.Redis

    def reserve_upload(self, name: str, size: int, limit: int, window: float) -> float:
        """Count `size` bytes against `name`'s budget of `limit` bytes per `window` seconds
        and return 0, or the seconds to wait before asking again (nothing counted).  A
        message larger than the whole budget goes once the window is empty."""
        script = self._r.register_script(_RESERVE)
        member = f"{uuid.uuid4().hex}:{size}"
        wait = script(
            keys=[_k("up", name), _k("up", name, "total")],
            args=[member, size, limit, time.time(), window],
        )
        return max(float(wait), 0.0)


# Drop entries older than the window (and their bytes from the total); count this one
# if it fits, or if nothing else is in the window; else say when the oldest leaves.
_RESERVE = """
local old = redis.call('zrangebyscore', KEYS[1], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[5]))
for _, member in ipairs(old) do
  local bytes = tonumber(string.match(member, ':(%d+)$')) or 0
  redis.call('decrby', KEYS[2], bytes)
  redis.call('zrem', KEYS[1], member)
end
local total = tonumber(redis.call('get', KEYS[2]) or '0')
if total < 0 or redis.call('zcard', KEYS[1]) == 0 then total = 0 end
if total + tonumber(ARGV[2]) <= tonumber(ARGV[3]) or redis.call('zcard', KEYS[1]) == 0 then
  redis.call('zadd', KEYS[1], ARGV[4], ARGV[1])
  redis.call('set', KEYS[2], total + tonumber(ARGV[2]))
  redis.call('expire', KEYS[1], math.ceil(tonumber(ARGV[5])) + 60)
  redis.call('expire', KEYS[2], math.ceil(tonumber(ARGV[5])) + 60)
  return '0'
end
local oldest = redis.call('zrange', KEYS[1], 0, 0, 'WITHSCORES')
return tostring(tonumber(oldest[2]) + tonumber(ARGV[5]) - tonumber(ARGV[4]) + 0.01)
"""

"""Daily byte caps (Gmail's bandwidth limits): the bytes read from or written to each
mailbox in a rolling window, shared by every worker, counted in one script each time.

`cap:{direction}:{mailbox}` is a sorted set of what was counted, `{token}:{bytes}` scored
by when; members older than the window are dropped as it is read.  `capblock:...` holds
until when a server's cut-off counts as the cap reached, `capstrike:...` that a
connection was lost lately (the second loss is the cut-off).
"""

from __future__ import annotations

import time
import uuid

import redis

from migrator.gmail import ByteMeter, Direction
from migrator.state.keys import _k


class RedisByteMeters:
    """migrator.gmail.ByteMeters in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client
        self._reserve = client.register_script(_RESERVE)

    def meter(self, direction: Direction, mailbox: str, cap: int, window: float) -> ByteMeter:
        return RedisByteMeter(self, direction, mailbox, cap, window)

    def used(self, direction: Direction, mailbox: str, window: float) -> int:
        """Bytes counted in the window now (status, tests)."""
        since = time.time() - window
        members = self._r.zrangebyscore(_k("cap", direction.value, mailbox), since, "+inf")
        return sum(int(str(m).rsplit(":", 1)[1]) for m in members)


class RedisByteMeter:
    def __init__(
        self, meters: RedisByteMeters, direction: Direction, mailbox: str, cap: int, window: float
    ) -> None:
        self._meters = meters
        self._key = _k("cap", direction.value, mailbox)
        self._block = _k("capblock", direction.value, mailbox)
        self._strike = _k("capstrike", direction.value, mailbox)
        self._cap = cap
        self._window = window

    def reserve(self, sizes: list[int], *, whole: bool = False) -> tuple[int, float | None]:
        if not sizes:
            return 0, None
        now = time.time()
        allowed, resume = self._meters._reserve(
            keys=[self._key, self._block],
            args=[repr(now), repr(self._window), self._cap, "1" if whole else "0",
                  uuid.uuid4().hex, *sizes],
        )  # fmt: skip
        count = int(allowed)
        return count, (float(resume) if count < len(sizes) else None)

    def reached(self, until: float) -> None:
        milliseconds = max(1, int((until - time.time()) * 1000))
        self._meters._r.set(self._block, repr(until), px=milliseconds)

    def lost(self, within: float) -> bool:
        first = self._meters._r.set(self._strike, repr(time.time()), nx=True,
                                    px=max(1, int(within * 1000)))  # fmt: skip
        return not first


# KEYS: the counted set, the cut-off block.  ARGV: now, window, cap, whole (1/0), a token,
# then the sizes.  Returns {how many sizes were counted, when the next would fit}.
_RESERVE = """
local now, window, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local whole = ARGV[4] == '1'
local blocked = redis.call('get', KEYS[2])
if blocked and tonumber(blocked) > now then return {0, blocked} end
redis.call('zremrangebyscore', KEYS[1], '-inf', '(' .. (now - window))
local entries = redis.call('zrange', KEYS[1], 0, -1, 'WITHSCORES')
local used = 0
for i = 1, #entries, 2 do used = used + tonumber(string.match(entries[i], ':(%d+)$')) end
local allowed, total = 0, 0
for i = 6, #ARGV do
  local size = tonumber(ARGV[i])
  if used + total + size > cap and used + total > 0 and not (whole and used == 0) then break end
  total = total + size
  allowed = allowed + 1
end
if whole and allowed < #ARGV - 5 then allowed, total = 0, 0 end
if total > 0 then
  redis.call('zadd', KEYS[1], now, ARGV[5] .. ':' .. total)
  redis.call('pexpire', KEYS[1], math.ceil(window * 1000) + 1000)
end
if allowed == #ARGV - 5 then return {allowed, ''} end
-- The next size fits once enough of the oldest counts have left the window.
local need = used + total + tonumber(ARGV[6 + allowed]) - cap
entries = redis.call('zrange', KEYS[1], 0, -1, 'WITHSCORES')
local freed = 0
for i = 1, #entries, 2 do
  freed = freed + tonumber(string.match(entries[i], ':(%d+)$'))
  if freed >= need then return {allowed, tostring(tonumber(entries[i + 1]) + window)} end
end
return {allowed, tostring(now + window)}
"""

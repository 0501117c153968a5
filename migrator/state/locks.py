"""The locks of a target mailbox: a Lease taken, renewed and let go, with its epochs
(fencing tokens), and the Lua that every script acting for a lease begins with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from migrator.state.keys import _k


@dataclass(frozen=True)
class Lease:
    """A worker's hold on one target mailbox: a lock under each of its names (its host as
    written and each address it resolves to, see mailboxid.lock_names), all or none, and
    the epoch each lock had when taken (its fencing token)."""

    names: tuple[str, ...]
    owner: str  # unique to this hold
    ttl: float  # seconds; the heartbeat renews it every third of that
    epochs: tuple[int, ...] = ()  # one per name, from StateStore.acquire
    # The last holder never let go (it died, or froze past its lock): appends it had in
    # flight may still land, so the first pass waits out the late-commit grace.
    inherited: bool = False


class Locks:
    """StateStore's mailbox locks (lock:, epoch:, held:)."""

    _r: redis.Redis

    def acquire(self, names: Sequence[str], owner: str, ttl: float) -> Lease | None:
        """Take the locks `names` for `owner`, all or none: the lease with a new epoch for
        each, or None when another owner holds any of them."""
        lease = Lease(tuple(names), owner, ttl)
        held = [_k("held", name) for name in lease.names]
        taken = self._script(_ACQUIRE)(keys=_lock_keys(lease) + held, args=_lock_args(lease))
        if taken is None:
            return None
        *epochs, inherited = (int(value) for value in taken)
        return Lease(lease.names, owner, ttl, tuple(epochs), bool(inherited))

    def renew(self, lease: Lease) -> bool:
        """Renew every lock of `lease`; False when another worker holds one, or held one
        since (its epoch moved on).  A lock that vanished with Redis's data is taken again."""
        return bool(self._script(_RENEW)(keys=_lock_keys(lease), args=_lock_args(lease)))

    def unlock(self, lease: Lease) -> None:
        keys = [key for name in lease.names for key in (_k("lock", name), _k("held", name))]
        self._script(_DELETE_IF_OWNER)(keys=keys, args=[lease.owner])

    def _script(self, text: str) -> Any:
        return self._r.register_script(text)


def _lock_keys(lease: Lease) -> list[str]:
    """The lease's locks and epochs, in pairs: what _FENCE's KEYS begin with."""
    return [key for name in lease.names for key in (_k("lock", name), _k("epoch", name))]


def _lock_args(lease: Lease) -> list[str]:
    """Owner, TTL in ms, how many names, then their epochs: what _FENCE's ARGV begin with."""
    ttl = str(max(1, int(lease.ttl * 1000)))
    return [lease.owner, ttl, str(len(lease.names)), *(str(e) for e in lease.epochs)]


# Scripts that act for a lease begin with its locks and epochs, in pairs (KEYS), and with
# owner, TTL ms, the number of names n and their n epochs (ARGV); their own keys and
# arguments follow.  fenced(): true, with every lock renewed, when this owner holds each
# lock, or it vanished and its epoch is still ours (or gone too: Redis lost its data).
_FENCE = """
local n = tonumber(ARGV[3])
local function fenced()
  for i = 1, n do
    local owner = redis.call('get', KEYS[2 * i - 1])
    if owner then
      if owner ~= ARGV[1] then return false end
    else
      local epoch = redis.call('get', KEYS[2 * i])
      if epoch and epoch ~= ARGV[3 + i] then return false end
    end
  end
  for i = 1, n do
    redis.call('set', KEYS[2 * i - 1], ARGV[1], 'px', ARGV[2])
    redis.call('set', KEYS[2 * i], ARGV[3 + i])
  end
  return true
end
"""

# Take every lock, each with a new epoch (KEYS: lock/epoch pairs, then the n held keys;
# ARGV: owner, TTL ms, n): the epochs and 1 where another holder never let go (else 0),
# or nil when another owner holds any of the locks.
_ACQUIRE = """
local n = tonumber(ARGV[3])
for i = 1, n do
  local owner = redis.call('get', KEYS[2 * i - 1])
  if owner and owner ~= ARGV[1] then return nil end
end
local taken = {}
local inherited = 0
for i = 1, n do
  redis.call('set', KEYS[2 * i - 1], ARGV[1], 'px', ARGV[2])
  taken[i] = redis.call('incr', KEYS[2 * i])
  local held = redis.call('get', KEYS[2 * n + i])
  if held and held ~= ARGV[1] then inherited = 1 end
  redis.call('set', KEYS[2 * n + i], ARGV[1])
end
taken[n + 1] = inherited
return taken
"""

_RENEW = (
    _FENCE
    + """
if fenced() then return 1 end
return 0
"""
)

_DELETE_IF_OWNER = """
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then redis.call('del', key) end
end
return 1
"""

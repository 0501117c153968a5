"""Progress, throughput, checkpoints, locks and connection caps in Redis.

Only this module talks to Redis.  Keys (all under "migrator:"):

    batch:{bid}              hash   created, options (JSON, no secrets), job count
    batch:{bid}:jobs         list   job ids in CSV order
    job:{bid}:{jid}          string job payload JSON (secrets only as sealed tokens)
    mbx:{bid}:{jid}          hash   state, identity, counters, folder, times, last error;
                                    heartbeat (Redis time) and locks (JSON names) while running
    tp:{bid}                 hash   "{minute}:m" / "{minute}:b" -> messages / bytes copied
    ck:{mailbox_key}         hash   "{uidvalidity}:{uid}:{folder}" of every message copied ->
                                    the content key of its copy (migrator.recognition)
    ckpt:{legacy_key}        set    checkpoints of earlier versions (read, never written)
    lock:{name}              string owner of a target mailbox while a pass runs (with TTL);
                                    one per name of it (mailboxid.lock_names)
    epoch:{name}             int    how many times that lock was taken: a worker whose lock
                                    vanished takes it again only if nobody took it meanwhile
    held:{name}              string its holder, kept until let go (no TTL): a new holder that
                                    finds another's there knows it died with its lock
    conn:{server}            zset   owner -> lease expiry; its size is capped per server
    beats                    zset   "{bid}:{jid}" of each running mailbox -> its last heartbeat
    fwd:{forward_key}        hash   forwarding of one source mailbox: state, method, target,
                                    detail, request (the command that last wrote it), time

Checkpoints are keyed by mailbox (source and target, canonical: mailboxid.py), not by
batch, so a later batch over the same mailboxes (a delta pass) starts from them too.
Every checkpoint a worker writes is fenced: the write happens only while that worker
holds the mailbox's locks, in the same script.  A lock that vanished is taken again only
when its epoch is still the worker's own (Redis emptied), never after another worker held
it (a worker paused past its lock, woken after the other finished).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from migrator.errors import LockLost
from migrator.plan import MessageRef
from migrator.report import MailboxResult, MailboxState
from migrator.secrets import redact
from migrator.sending import Checkpoint

PREFIX = "migrator:"


def _k(*parts: str) -> str:
    return PREFIX + ":".join(parts)


@dataclass(frozen=True)
class MailboxStatus:
    batch_id: str
    job_id: str
    line: int
    source_identity: str
    target_identity: str
    state: MailboxState
    total_messages: int
    total_bytes: int
    done_messages: int
    done_bytes: int
    copied_messages: int
    left_messages: int
    left_bytes: int
    skipped_messages: int
    rewritten_messages: int
    rewritten_addresses: int
    unparsable_headers: int
    current_folder: str
    started: float | None
    updated: float | None
    last_error: str
    copied_non_mail: int = 0  # calendar, contact and task items (EWS source)
    skipped_non_mail: int = 0

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["state"] = self.state.value
        return data


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


@dataclass(frozen=True)
class NewJob:
    job_id: str
    line: int
    source_identity: str
    target_identity: str
    mailbox_key: str
    payload: str  # JSON; secrets sealed


class StateStore:
    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    @classmethod
    def from_url(cls, url: str) -> StateStore:
        # A Redis restart of a few seconds must not fail a mailbox: every command is
        # retried with backoff (about 30 s in all) before the error reaches the copier.
        return cls(
            redis.Redis.from_url(
                url,
                decode_responses=True,
                retry=Retry(ExponentialBackoff(cap=5.0, base=0.2), retries=10),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
            )
        )

    @property
    def client(self) -> redis.Redis:
        return self._r

    def flush_to_disk(self) -> None:
        """Rewrite the append-only file now (the private Redis of `migrator run` stops next)."""
        self._r.bgrewriteaof()

    # -- batches --------------------------------------------------------------------

    def create_batch(self, batch_id: str, meta: Mapping[str, str], jobs: Sequence[NewJob]) -> None:
        """All or nothing (MULTI/EXEC): a batch is never half-enqueued."""
        now = str(time.time())
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(
            _k("batch", batch_id), mapping=_fields({**meta, "created": now, "jobs": str(len(jobs))})
        )
        pipe.delete(_k("batch", batch_id, "jobs"))
        if jobs:
            pipe.rpush(_k("batch", batch_id, "jobs"), *[j.job_id for j in jobs])
        for job in jobs:
            pipe.set(_k("job", batch_id, job.job_id), job.payload)
            pipe.delete(_k("mbx", batch_id, job.job_id))
            pipe.hset(
                _k("mbx", batch_id, job.job_id),
                mapping=_fields(
                    {
                        "line": str(job.line),
                        "source_identity": job.source_identity,
                        "target_identity": job.target_identity,
                        "mailbox_key": job.mailbox_key,
                        "state": MailboxState.QUEUED.value,
                        "updated": now,
                    }
                ),
            )
        pipe.execute()

    def batch_exists(self, batch_id: str) -> bool:
        return bool(self._r.exists(_k("batch", batch_id)))

    def batch_meta(self, batch_id: str) -> dict[str, str]:
        return _strs(self._r.hgetall(_k("batch", batch_id)))

    def job_ids(self, batch_id: str) -> list[str]:
        return [str(v) for v in self._r.lrange(_k("batch", batch_id, "jobs"), 0, -1)]

    def payload(self, batch_id: str, job_id: str) -> str | None:
        value = self._r.get(_k("job", batch_id, job_id))
        return str(value) if value is not None else None

    # -- mailbox state --------------------------------------------------------------

    def mailbox(self, batch_id: str, job_id: str) -> MailboxStatus | None:
        data = _strs(self._r.hgetall(_k("mbx", batch_id, job_id)))
        return _status(batch_id, job_id, data) if data else None

    def mailboxes(self, batch_id: str) -> list[MailboxStatus]:
        ids = self.job_ids(batch_id)
        pipe = self._r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(_k("mbx", batch_id, job_id))
        rows = pipe.execute()
        return [_status(batch_id, j, _strs(d)) for j, d in zip(ids, rows, strict=True) if d]

    def set_state(
        self, batch_id: str, job_id: str, state: MailboxState, *, error: str | None = None
    ) -> None:
        now = str(time.time())
        fields = {"state": state.value, "updated": now}
        if state is MailboxState.RUNNING:
            fields["started"] = now
            fields["last_error"] = ""
        if error is not None:
            fields["last_error"] = redact(error)[:1000]
        self._r.hset(_k("mbx", batch_id, job_id), mapping=_fields(fields))

    def record_result(self, batch_id: str, job_id: str, result: MailboxResult) -> None:
        fields = {
            "state": result.state.value,
            "updated": str(time.time()),
            "left_messages": str(result.left_messages),
            "left_bytes": str(result.left_bytes),
            "skipped_messages": str(len(result.skipped)),
            "skipped": json.dumps(
                [
                    {"folder": s.folder, "uid": s.uid, "size": s.size, "reason": s.reason}
                    for s in result.skipped[:1000]
                ]
            ),
            "last_error": redact(result.error or "")[:1000],
            "rewritten_messages": str(result.rewritten_messages),
            "rewritten_addresses": str(result.rewritten_addresses),
            "unparsable_headers": str(result.unparsable_headers),
            "copied_non_mail": str(result.copied_non_mail),
            "skipped_non_mail": str(result.skipped_non_mail),
        }
        if result.total_messages or result.state is not MailboxState.FAILED:
            fields["total_messages"] = str(result.total_messages)
            fields["total_bytes"] = str(result.total_bytes)
        if result.state in (MailboxState.DONE, MailboxState.QUOTA_STOPPED):
            # The pass's own count is exact; the running counters may have lost a few
            # increments to a Redis restart.
            fields["done_messages"] = str(result.already_messages + result.copied_messages)
            fields["done_bytes"] = str(result.already_bytes + result.copied_bytes)
        key = _k("mbx", batch_id, job_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(key, mapping=_fields(fields))
        # Time waiting on each side, added up over passes (the velocity report reads them).
        pipe.hincrbyfloat(key, "source_seconds", result.source_seconds)
        pipe.hincrbyfloat(key, "target_seconds", result.target_seconds)
        pipe.hincrbyfloat(key, "throttle_seconds", result.throttle_seconds)
        pipe.execute()

    def progress(
        self,
        batch_id: str,
        job_id: str,
        mailbox_key: str,
        lease: Lease | None = None,
        lost: threading.Event | None = None,
        legacy_key: str | None = None,
    ) -> RedisProgress:
        """The copier's Progress for one mailbox; with `lease`, every checkpoint it writes
        is fenced by it.  `legacy_key`: where an earlier version kept this mailbox's
        checkpoints (read, so an upgrade does not forget them)."""
        return RedisProgress(self._r, batch_id, job_id, mailbox_key, lease, lost, legacy_key)

    def throughput(self, batch_id: str) -> list[tuple[int, int, int]]:
        """(minute as epoch seconds, messages, bytes) per minute, oldest first."""
        raw = _strs(self._r.hgetall(_k("tp", batch_id)))
        minutes: dict[int, list[int]] = {}
        for field, value in raw.items():
            minute, kind = field.split(":")
            slot = minutes.setdefault(int(minute), [0, 0])
            slot[0 if kind == "m" else 1] += int(value)
        return [(m, v[0], v[1]) for m, v in sorted(minutes.items())]

    # -- locks and connection caps --------------------------------------------------

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

    def acquire_slot(self, server: str, owner: str, cap: int, ttl: float) -> bool:
        """Take one of `cap` connection slots for `server`, shared by every worker."""
        script = self._r.register_script(_ACQUIRE_SLOT)
        now = time.time()
        return bool(script(keys=[_k("conn", server)], args=[owner, cap, now, now + ttl]))

    def refresh_slot(self, server: str, owner: str, ttl: float) -> None:
        self._r.zadd(_k("conn", server), {owner: time.time() + ttl}, xx=True)

    def release_slot(self, server: str, owner: str) -> None:
        self._r.zrem(_k("conn", server), owner)

    # -- forwarding -------------------------------------------------------------------

    def record_forwarding(self, forward_key: str, fields: Mapping[str, str]) -> None:
        self._r.hset(_k("fwd", forward_key), mapping=_fields({**fields, "time": str(time.time())}))

    def forwarding(self, forward_key: str) -> dict[str, str]:
        return _strs(self._r.hgetall(_k("fwd", forward_key)))

    # -- for velocity reports and pilot reruns -----------------------------------------

    def mailbox_fields(
        self, batch_id: str, job_ids: Sequence[str], names: Sequence[str]
    ) -> list[dict[str, str]]:
        """The named fields of each job's mbx hash (absent ones left out), in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hmget(_k("mbx", batch_id, job_id), list(names))
        return [
            {name: str(v) for name, v in zip(names, values, strict=True) if v is not None}
            for values in pipe.execute()
        ]

    def forget_checkpoints(self, mailbox_keys: Iterable[str]) -> int:
        """Delete these mailboxes' checkpoints (a pilot copies again); how many existed."""
        keys = [_k("ck", key) for key in mailbox_keys]
        return int(self._r.delete(*keys)) if keys else 0

    # -- heartbeats, and requeuing the mailboxes of dead workers ----------------------
    # mbx:{bid}:{jid} "heartbeat" is the time of the last beat of the worker copying the
    # mailbox, and beats (zset "{bid}:{jid}" -> that time) lists the mailboxes to watch;
    # both read Redis's clock, so the workers' clocks need not agree.

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


class RedisProgress:
    """The copier's Progress, kept in Redis: each batch of stored messages is
    checkpointed and counted in one script, so a crash never leaves one without the
    other, and only while this worker holds the mailbox (the fence)."""

    def __init__(
        self,
        client: redis.Redis,
        batch_id: str,
        job_id: str,
        mailbox_key: str,
        lease: Lease | None = None,
        lost: threading.Event | None = None,
        legacy_key: str | None = None,
    ) -> None:
        self._r = client
        self._lease = lease
        self._lost = lost
        self._mbx = _k("mbx", batch_id, job_id)
        self._ckpt = _k("ck", mailbox_key)
        self._legacy = _k("ckpt", legacy_key) if legacy_key else None
        self._tp = _k("tp", batch_id)
        self._folder: str | None = None
        self._copied = client.register_script(_COPIED)
        self._renew = client.register_script(_RENEW)

    def checkpoints(self) -> dict[Checkpoint, str | None]:
        result: dict[Checkpoint, str | None] = {}
        if self._legacy is not None:
            for member in self._r.sscan_iter(self._legacy, count=5000):
                result[_checkpoint(str(member))] = None
        for member, key in self._r.hscan_iter(self._ckpt, count=5000):
            result[_checkpoint(str(member))] = str(key) or None
        return result

    def planned(
        self, *, total_messages: int, total_bytes: int, done_messages: int, done_bytes: int
    ) -> None:
        self._r.hset(
            self._mbx,
            mapping=_fields(
                {
                    "total_messages": str(total_messages),
                    "total_bytes": str(total_bytes),
                    "done_messages": str(done_messages),
                    "done_bytes": str(done_bytes),
                    "updated": str(time.time()),
                }
            ),
        )

    def folder(self, name: str) -> None:
        # Newest first, the folder changes at nearly every message: the name rides with
        # the next checkpoint rather than costing a Redis round trip of its own.
        self._folder = name

    def fence(self) -> None:
        if self._lost is not None and self._lost.is_set():
            raise LockLost("another worker took this mailbox over; stopping here")
        if self._lease is not None and not self._renew(
            keys=_lock_keys(self._lease), args=_lock_args(self._lease)
        ):
            raise LockLost("another worker holds this mailbox now; stopping here")

    def copied(self, copies: Sequence[tuple[MessageRef, str | None]]) -> None:
        if self._lost is not None and self._lost.is_set():
            raise LockLost("another worker took this mailbox over; stopping here")
        if not copies:
            return
        now = time.time()
        minute = str(int(now // 60 * 60))
        self._write(
            copies,
            [
                str(len(copies)),
                str(sum(r.size for r, _ in copies)),
                str(now),
                minute,
                self._folder or "",
            ],
        )

    def recognised(self, copies: Sequence[tuple[MessageRef, str | None]]) -> None:
        for start in range(0, len(copies), 1000):
            self._write(copies[start : start + 1000], ["0", "0", "", "", ""])

    def _write(self, copies: Sequence[tuple[MessageRef, str | None]], counts: list[str]) -> None:
        """Checkpoint `copies` and add `counts` (messages, bytes, time, minute, folder;
        no counting where messages is 0), fenced by the lease in the same script."""
        lease = self._lease
        pairs = [part for ref, key in copies for part in (_member(ref), key or "")]
        keys = [*(_lock_keys(lease) if lease else []), self._ckpt, self._mbx, self._tp]
        args = [*(_lock_args(lease) if lease else ["", "0", "0"]), *counts, *pairs]
        if not self._copied(keys=keys, args=args):
            raise LockLost("another worker holds this mailbox now; nothing recorded")


def _fields(values: Mapping[str, str]) -> dict[Any, Any]:
    # redis-py's hset wants Mapping[EncodableT, EncodableT]; Mapping keys are invariant.
    return dict(values)


def _strs(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(raw).items()}


def _member(ref: MessageRef) -> str:
    return f"{ref.uidvalidity}:{ref.uid}:{ref.folder}"


def _checkpoint(member: str) -> Checkpoint:
    uidvalidity, uid, folder = member.split(":", 2)
    return (folder, int(uidvalidity), int(uid))


def _lock_keys(lease: Lease) -> list[str]:
    """The lease's locks and epochs, in pairs: what _FENCE's KEYS begin with."""
    return [key for name in lease.names for key in (_k("lock", name), _k("epoch", name))]


def _lock_args(lease: Lease) -> list[str]:
    """Owner, TTL in ms, how many names, then their epochs: what _FENCE's ARGV begin with."""
    ttl = str(max(1, int(lease.ttl * 1000)))
    return [lease.owner, ttl, str(len(lease.names)), *(str(e) for e in lease.epochs)]


def _status(batch_id: str, job_id: str, d: Mapping[str, str]) -> MailboxStatus:
    def num(name: str) -> int:
        return int(d.get(name) or 0)

    def when(name: str) -> float | None:
        value = d.get(name)
        return float(value) if value else None

    return MailboxStatus(
        batch_id=batch_id,
        job_id=job_id,
        line=num("line"),
        source_identity=d.get("source_identity", ""),
        target_identity=d.get("target_identity", ""),
        state=MailboxState(d.get("state", MailboxState.QUEUED.value)),
        total_messages=num("total_messages"),
        total_bytes=num("total_bytes"),
        done_messages=num("done_messages"),
        done_bytes=num("done_bytes"),
        copied_messages=num("copied_messages"),
        left_messages=num("left_messages"),
        left_bytes=num("left_bytes"),
        skipped_messages=num("skipped_messages"),
        rewritten_messages=num("rewritten_messages"),
        rewritten_addresses=num("rewritten_addresses"),
        unparsable_headers=num("unparsable_headers"),
        current_folder=d.get("current_folder", ""),
        started=when("started"),
        updated=when("updated"),
        last_error=d.get("last_error", ""),
        copied_non_mail=num("copied_non_mail"),
        skipped_non_mail=num("skipped_non_mail"),
    )


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

# Checkpoints and counts of one batch, fenced (nothing is written unless fenced()).
# Own KEYS: ck, mbx, tp.  Own ARGV: messages, bytes, time, minute, folder, then
# member/key pairs.
_COPIED = (
    _FENCE
    + """
if not fenced() then return 0 end
local k = 2 * n
local a = 3 + n
for i = a + 6, #ARGV, 2 do
  redis.call('hset', KEYS[k + 1], ARGV[i], ARGV[i + 1])
end
local messages = tonumber(ARGV[a + 1])
if messages > 0 then
  redis.call('hincrby', KEYS[k + 2], 'done_messages', messages)
  redis.call('hincrby', KEYS[k + 2], 'done_bytes', ARGV[a + 2])
  redis.call('hincrby', KEYS[k + 2], 'copied_messages', messages)
  redis.call('hincrby', KEYS[k + 2], 'copied_bytes', ARGV[a + 2])
  redis.call('hset', KEYS[k + 2], 'updated', ARGV[a + 3])
  if ARGV[a + 5] ~= '' then redis.call('hset', KEYS[k + 2], 'current_folder', ARGV[a + 5]) end
  redis.call('hincrby', KEYS[k + 3], ARGV[a + 4] .. ':m', messages)
  redis.call('hincrby', KEYS[k + 3], ARGV[a + 4] .. ':b', ARGV[a + 2])
end
return 1
"""
)

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

"""StateStore: batches, mailbox rows, throughput, forwarding records, and the locks,
slots and heartbeats it takes from its mixins; MailboxStatus and NewJob, the rows it
reads and writes."""

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

from migrator.report import MailboxResult, MailboxState
from migrator.secrets import redact
from migrator.state.beats import Heartbeats
from migrator.state.catalog import Catalog
from migrator.state.dailycaps import RedisByteMeters
from migrator.state.events import EventLog
from migrator.state.keys import _fields, _k, _strs
from migrator.state.locks import Lease, Locks
from migrator.state.passes import Passes
from migrator.state.progress import RedisProgress
from migrator.state.slots import Slots
from migrator.state.tokens import RedisTokenShelf
from migrator.state.uploads import Uploads

# Characters of a mailbox's error kept: the whole of any error migrator writes.
ERROR_MAX = 4000


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
    copied_bytes: int = 0  # sent by this batch (done_bytes counts those there already)
    error_code: str = ""  # the ErrorCode of last_error, where one is known
    resume_at: float | None = None  # paused (a daily cap): when it goes on by itself
    last_sync: float | None = None  # when a pass last ended with the mail in

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["state"] = self.state.value
        return data


@dataclass(frozen=True)
class NewJob:
    job_id: str
    line: int
    source_identity: str
    target_identity: str
    mailbox_key: str
    payload: str  # JSON; secrets sealed


class StateStore(Locks, Slots, Heartbeats, EventLog, Catalog, Uploads, Passes):
    """Everything migrator keeps in Redis (keys: migrator.state.keys); locks, connection
    slots, heartbeats, event logs, the list of batches, upload budgets and the passes of
    incremental syncs come from the mixins of locks.py, slots.py, beats.py, events.py,
    catalog.py, uploads.py and passes.py."""

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

    def byte_meters(self) -> RedisByteMeters:
        """The daily byte caps of mailboxes (Gmail's), shared by every worker."""
        return RedisByteMeters(self._r)

    def token_shelf(self) -> RedisTokenShelf:
        """Where this Redis's workers share OAuth tokens (sealed)."""
        return RedisTokenShelf(self._r)

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
        self,
        batch_id: str,
        job_id: str,
        state: MailboxState,
        *,
        error: str | None = None,
        code: str = "",
    ) -> None:
        now = str(time.time())
        fields = {"state": state.value, "updated": now}
        if state is MailboxState.RUNNING:
            fields["started"] = now
            fields["last_error"] = fields["error_code"] = ""
            fields["resume_at"] = ""
        if error is not None:
            fields["last_error"] = redact(error)[:ERROR_MAX]
            fields["error_code"] = code
        self._r.hset(_k("mbx", batch_id, job_id), mapping=_fields(fields))

    def record_result(
        self, batch_id: str, job_id: str, result: MailboxResult, *, first_pass: bool = True
    ) -> None:
        if result.state is MailboxState.PAUSED:
            # Not an outcome: the counters stay as the checkpoints left them.
            self._r.hset(
                _k("mbx", batch_id, job_id),
                mapping=_fields(
                    {
                        "state": result.state.value,
                        "updated": str(time.time()),
                        "resume_at": str(result.resume_at or ""),
                        "last_error": redact(result.error or "")[:1000],
                    }
                ),
            )
            return
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
            "last_error": redact(result.error or "")[:ERROR_MAX],
            "error_code": result.error_code,
            "rewritten_messages": str(result.rewritten_messages),
            "rewritten_addresses": str(result.rewritten_addresses),
            "unparsable_headers": str(result.unparsable_headers),
            "copied_non_mail": str(result.copied_non_mail),
            "skipped_non_mail": str(result.skipped_non_mail),
        }
        if result.total_messages or result.state is not MailboxState.FAILED:
            fields["total_messages"] = str(result.total_messages)
            fields["total_bytes"] = str(result.total_bytes)
        if first_pass and (result.state.copied or result.state is MailboxState.QUOTA_STOPPED):
            # The first pass's own count is exact; the running counters may have lost a
            # few increments to a Redis restart.  (An incremental pass counts only what
            # it moved, so the counters stay.)
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
        """Delete these mailboxes' checkpoints (a pilot copies again), and their ledgers
        and folder states with them; how many had checkpoints."""
        wanted = list(mailbox_keys)
        keys = [_k("ck", key) for key in wanted]
        if not keys:
            return 0
        counted = int(self._r.exists(*keys))
        self._r.delete(*keys, *[_k(kind, key) for key in wanted for kind in ("lg", "fs", "tm")])
        return counted


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
        copied_bytes=num("copied_bytes"),
        error_code=d.get("error_code", ""),
        resume_at=when("resume_at"),
        last_sync=when("last_sync"),
    )

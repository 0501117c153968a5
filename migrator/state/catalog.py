"""The batches Redis holds: listing them, replacing one, and the skipped messages of a
mailbox row (StateStore's mixin)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import redis

from migrator.report import MailboxState, SkippedMessage
from migrator.state.keys import _k

if TYPE_CHECKING:
    from migrator.state.store import MailboxStatus


@dataclass(frozen=True)
class BatchSummary:
    batch_id: str
    created: float
    mailboxes: int
    states: dict[str, int]  # state -> how many mailboxes are in it
    updated: float  # the newest change of any of its mailboxes

    @property
    def finished(self) -> bool:
        return not (self.states.get("queued") or self.states.get("running"))


class Catalog:
    """StateStore's view over batches."""

    _r: redis.Redis

    if TYPE_CHECKING:

        def job_ids(self, batch_id: str) -> list[str]: ...  # StateStore's (store.py)

        def mailboxes(self, batch_id: str) -> list[MailboxStatus]: ...

        def batch_meta(self, batch_id: str) -> dict[str, str]: ...

    def batch_ids(self) -> list[str]:
        """Every batch in this Redis, oldest first."""
        head = _k("batch", "")
        ids = {
            str(key)[len(head) :]
            for key in self._r.scan_iter(match=head + "*", count=1000)
            if ":" not in str(key)[len(head) :]
        }
        created = {b: float(self._r.hget(_k("batch", b), "created") or 0) for b in ids}
        return sorted(ids, key=lambda b: (created[b], b))

    def batch_summary(self, batch_id: str) -> BatchSummary:
        meta = self.batch_meta(batch_id)
        rows = self.mailboxes(batch_id)
        states: dict[str, int] = {}
        for row in rows:
            states[row.state.value] = states.get(row.state.value, 0) + 1
        created = float(meta.get("created") or 0)
        updated = max((r.updated or 0.0 for r in rows), default=created)
        return BatchSummary(batch_id, created, len(rows), states, max(updated, created))

    def running_mailboxes(self, batch_id: str) -> int:
        return sum(1 for r in self.mailboxes(batch_id) if r.state is MailboxState.RUNNING)

    def delete_batch(self, batch_id: str) -> None:
        """Forget a batch: its rows, payloads, event logs and throughput (`--replace`).
        Checkpoints are the mailboxes', not the batch's: what was copied stays known."""
        ids = self.job_ids(batch_id)
        keys = [_k("batch", batch_id), _k("batch", batch_id, "jobs"), _k("tp", batch_id)]
        for job_id in ids:
            keys += [_k("job", batch_id, job_id), _k("mbx", batch_id, job_id)]
            keys.append(_k("ev", batch_id, job_id))
        self._r.delete(*keys)
        if ids:
            self._r.zrem(_k("beats"), *[f"{batch_id}:{j}" for j in ids])

    def claim_batch_end(self, batch_id: str) -> bool:
        """True once per end of a batch: for the one caller that finds every mailbox in a
        final state first (who then tells people); `reopen_batch` starts it over."""
        script = self._r.register_script(_CLAIM_END)
        finals = [s.value for s in MailboxState if s.final]
        keys = [_k("batch", batch_id), _k("batch", batch_id, "jobs")]
        return bool(script(keys=keys, args=[_k("mbx", batch_id, ""), *finals]))

    def reopen_batch(self, batch_id: str) -> None:
        """Its mailboxes run again (resume): its end is told again when it comes."""
        self._r.hdel(_k("batch", batch_id), "ended")

    def skipped(self, batch_id: str, job_id: str) -> list[SkippedMessage]:
        """The messages the target refused (or the source never sent), named with why."""
        raw = self._r.hget(_k("mbx", batch_id, job_id), "skipped")
        return [
            SkippedMessage(str(s["folder"]), str(s["uid"]), int(s["size"]), str(s["reason"]))
            for s in json.loads(str(raw) if raw else "[]")
        ]

    def folder_counts(self, batch_id: str, job_id: str, limit: int = 500_000) -> dict[str, int]:
        """Messages known at the target per source folder, from the mailbox's checkpoints
        (read up to `limit` of them: a page, not an audit)."""
        key = self._r.hget(_k("mbx", batch_id, job_id), "mailbox_key")
        counts: dict[str, int] = {}
        if not key:
            return counts
        for seen, member in enumerate(self._r.hscan_iter(_k("ck", str(key)), count=5000)):
            if seen >= limit:
                break
            folder = str(member[0]).split(":", 2)[-1]
            counts[folder] = counts.get(folder, 0) + 1
        return counts

    def mailbox_extra(self, batch_id: str, job_id: str) -> dict[str, str]:
        """The row's fields the MailboxStatus leaves out (times waited on each side)."""
        names = ["source_seconds", "target_seconds", "throttle_seconds", "copied_bytes"]
        values = self._r.hmget(_k("mbx", batch_id, job_id), names)
        return {n: str(v) for n, v in zip(names, values, strict=True) if v is not None}


# Every mailbox of the batch in a final state, and "ended" not set yet: set it, say 1.
# KEYS: batch hash, job list.  ARGV: the mbx key prefix, then the final states.
_CLAIM_END = """
if redis.call('hexists', KEYS[1], 'ended') == 1 then return 0 end
local finals = {}
for i = 2, #ARGV do finals[ARGV[i]] = true end
local ids = redis.call('lrange', KEYS[2], 0, -1)
if #ids == 0 then return 0 end
for _, id in ipairs(ids) do
  local state = redis.call('hget', ARGV[1] .. id, 'state')
  if not state or not finals[state] then return 0 end
end
redis.call('hset', KEYS[1], 'ended', redis.call('time')[1])
return 1
"""

"""What each pass over a mailbox moved, and when it last synced (a StateStore mixin)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from migrator.report import MailboxResult
from migrator.state.keys import _k

# Passes kept per mailbox, the newest.
KEPT_PASSES = 100


class Passes:
    """`ps:{bid}:{jid}`: one JSON record per pass; `last_sync` on the mailbox row."""

    _r: redis.Redis

    def record_pass(self, batch_id: str, job_id: str, kind: str, result: MailboxResult) -> None:
        now = time.time()
        record = {
            "kind": kind,
            "finished": now,
            "state": result.state.value,
            "new_messages": result.copied_messages,
            "new_bytes": result.copied_bytes,
            "flag_changes": result.flag_changes,
            "vanished_messages": result.vanished_messages,
            "deleted_messages": result.deleted_messages,
            "new_folders": result.new_folders,
            "renamed_folders": result.renamed_folders,
        }
        row = _k("mbx", batch_id, job_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.rpush(_k("ps", batch_id, job_id), json.dumps(record))
        pipe.ltrim(_k("ps", batch_id, job_id), -KEPT_PASSES, -1)
        if result.state.copied:
            pipe.hset(row, "last_sync", str(now))
        pipe.execute()
        if result.state.copied:
            self._keep_totals(row, kind, result)

    def _keep_totals(self, row: str, kind: str, result: MailboxResult) -> None:
        """The mailbox's own totals on its row: an incremental pass counts (and shows while
        it runs) only its new messages, so after it the row's totals are the mailbox's again:
        those of the first pass, plus what later passes brought, less what they removed."""
        if kind == "copy":
            mapping = {
                "mailbox_messages": result.total_messages,
                "mailbox_bytes": result.total_bytes,
            }
            self._r.hset(row, mapping=mapping)  # type: ignore[arg-type]
            return
        if not self._r.hexists(row, "mailbox_messages"):
            return  # first copied by an earlier version: the pass's own figures stand
        pipe = self._r.pipeline(transaction=True)
        pipe.hincrby(row, "mailbox_messages", result.copied_messages - result.deleted_messages)
        pipe.hincrby(row, "mailbox_bytes", result.copied_bytes)
        messages, size = pipe.execute()
        self._r.hset(
            row,
            mapping={
                "total_messages": messages,
                "done_messages": messages,
                "total_bytes": size,
                "done_bytes": size,
            },
        )

    def set_pass_request(self, batch_id: str, job_id: str, request_json: str) -> None:
        """The pass the mailbox is queued for (syncstate.PassRequest), kept on its row so
        that a task sent without one (a reaper's requeue, a resume) runs that pass."""
        self._r.hset(_k("mbx", batch_id, job_id), "pass_request", request_json)

    def pass_request(self, batch_id: str, job_id: str) -> str | None:
        value = self._r.hget(_k("mbx", batch_id, job_id), "pass_request")
        return str(value) if value else None

    def passes(self, batch_id: str, job_id: str) -> list[dict[str, Any]]:
        """Every pass recorded for the mailbox, oldest first."""
        return self.passes_of(batch_id, [job_id])[job_id]

    def passes_of(
        self, batch_id: str, job_ids: Sequence[str], *, last: bool = False
    ) -> dict[str, list[dict[str, Any]]]:
        """Every pass (or with `last`, the last one) of each mailbox, in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.lrange(_k("ps", batch_id, job_id), -1 if last else 0, -1)
        return {
            job_id: [json.loads(str(row)) for row in rows]
            for job_id, rows in zip(job_ids, pipe.execute(), strict=True)
        }

"""What the dashboard shows, read from StateStore: plain values the page renders."""

from __future__ import annotations

import time
from typing import Any

from migrator.errors import ConfigError
from migrator.mailboxreport import mailbox_report
from migrator.rates import recent_rate
from migrator.state import MailboxStatus, StateStore
from migrator.totals import BatchTotals, batch_totals

# Minutes of throughput the batch's chart draws at most.
CHART_MINUTES = 180


def batches(store: StateStore) -> list[dict[str, Any]]:
    """Every batch, newest first: its counts by state, totals, rate and ETA."""
    now = time.time()
    out = []
    for batch_id in reversed(store.batch_ids()):
        rows = store.mailboxes(batch_id)
        totals = batch_totals(rows)
        meta = store.batch_meta(batch_id)
        out.append(
            {
                "batch_id": batch_id,
                "created": float(meta.get("created") or 0),
                **_figures(totals, store, batch_id, now),
            }
        )
    return out


def batch(store: StateStore, batch_id: str) -> dict[str, Any]:
    """One batch: its figures, every mailbox, throughput per minute, errors by reason."""
    if not store.batch_exists(batch_id):
        raise ConfigError(f"batch {batch_id} is not in this Redis")
    now = time.time()
    rows = store.mailboxes(batch_id)
    ages = store.heartbeat_ages(batch_id)
    meta = store.batch_meta(batch_id)
    return {
        "batch_id": batch_id,
        "created": float(meta.get("created") or 0),
        "now": now,
        **_figures(batch_totals(rows), store, batch_id, now),
        "mailboxes": [_row(r, ages.get(r.job_id)) for r in rows],
        "throughput": [
            {"minute": m, "messages": n, "bytes": b}
            for m, n, b in store.throughput(batch_id)[-CHART_MINUTES:]
        ],
        "errors": errors_by_reason(rows),
    }


def mailbox(store: StateStore, batch_id: str, job_id: str) -> dict[str, Any]:
    """One mailbox: the report's figures, skipped messages and event log."""
    row = store.mailbox(batch_id, job_id)
    if row is None:
        raise ConfigError(f"batch {batch_id} has no mailbox {job_id}")
    # Its folders are read apart, and less often (folders below).
    report = mailbox_report(store, row, with_folders=False)
    return {"batch_id": batch_id, **report, "folder": row.current_folder}


def folders(store: StateStore, batch_id: str, job_id: str) -> list[dict[str, Any]]:
    """Per source folder: messages at the target (checkpointed) and skipped."""
    if store.mailbox(batch_id, job_id) is None:
        raise ConfigError(f"batch {batch_id} has no mailbox {job_id}")
    copied = store.folder_counts(batch_id, job_id)
    skipped: dict[str, int] = {}
    for message in store.skipped(batch_id, job_id):
        skipped[message.folder] = skipped.get(message.folder, 0) + 1
    return [
        {"folder": name, "copied": copied.get(name, 0), "skipped": skipped.get(name, 0)}
        for name in sorted(set(copied) | set(skipped))
    ]


def errors_by_reason(rows: list[MailboxStatus]) -> list[dict[str, Any]]:
    """Mailboxes with an error, grouped by its code (or its text, where no code is known),
    the largest group first."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if not row.last_error:
            continue
        reason = row.error_code or row.last_error.split(":", 1)[0]
        groups.setdefault(reason, []).append(
            {
                "job_id": row.job_id,
                "source": row.source_identity,
                "state": row.state.value,
                "error": row.last_error,
            }
        )
    return [
        {"reason": reason, "count": len(items), "mailboxes": items}
        for reason, items in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    ]


def _figures(totals: BatchTotals, store: StateStore, batch_id: str, now: float) -> dict[str, Any]:
    rate = recent_rate(store.throughput(batch_id), now)
    return {
        "mailbox_count": totals.mailboxes,
        "states": totals.states,
        "finished": totals.finished,
        "total_messages": totals.total_messages,
        "total_bytes": totals.total_bytes,
        "done_messages": totals.done_messages,
        "done_bytes": totals.done_bytes,
        "copied_messages": totals.copied_messages,
        "skipped_messages": totals.skipped_messages,
        "messages_per_second": rate.messages_per_second,
        "mb_per_second": rate.mb_per_second,
        "eta_seconds": totals.eta(rate) if totals.finished < totals.mailboxes else 0.0,
    }


def _row(row: MailboxStatus, heartbeat_age: float | None) -> dict[str, Any]:
    return {
        "job_id": row.job_id,
        "line": row.line,
        "source": row.source_identity,
        "target": row.target_identity,
        "state": row.state.value,
        "total_messages": row.total_messages,
        "total_bytes": row.total_bytes,
        "done_messages": row.done_messages,
        "done_bytes": row.done_bytes,
        "left_messages": row.left_messages,
        "skipped_messages": row.skipped_messages,
        "folder": row.current_folder,
        "error": row.last_error,
        "error_code": row.error_code,
        "heartbeat_age": heartbeat_age,
        "resume_at": row.resume_at,  # paused (a daily cap): when it goes on by itself
        "last_sync": row.last_sync,  # when its last pass ended well (epoch seconds)
    }

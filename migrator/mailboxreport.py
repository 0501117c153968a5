"""`migrator report`: what a helpdesk needs of each mailbox of a batch, like imapsync's
end-of-run figures and Exchange's -IncludeReport: counts, sizes, times and rates, every
skipped message with why, the error, when it last synced and what each pass moved, and the
event log; as text, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from migrator.display import moved_text
from migrator.errors import ConfigError
from migrator.rates import duration_text
from migrator.state import MailboxStatus, StateStore

FORMATS = ("text", "json", "csv")

# The columns of the CSV report: one row per mailbox.
CSV_COLUMNS = (
    "line", "job_id", "source", "target", "state", "total_messages", "total_bytes",
    "done_messages", "done_bytes", "copied_messages", "copied_bytes", "left_messages", "left_bytes",
    "skipped_messages", "started", "updated", "seconds", "mb_per_second",
    "source_seconds", "target_seconds", "throttle_seconds", "error",
    "last_sync", "pass_count", "last_pass",
)  # fmt: skip


def mailbox_report(
    store: StateStore, row: MailboxStatus, *, with_folders: bool = True
) -> dict[str, Any]:
    """One mailbox: its figures, folders (read from its checkpoints, unless not
    `with_folders`), skipped messages and events, as plain values."""
    extra = store.mailbox_extra(row.batch_id, row.job_id)
    seconds = (row.updated - row.started) if row.started and row.updated else None
    copied_bytes = int(extra.get("copied_bytes") or 0)
    return {
        "line": row.line,
        "job_id": row.job_id,
        "source": row.source_identity,
        "target": row.target_identity,
        "state": row.state.value,
        "total_messages": row.total_messages,
        "total_bytes": row.total_bytes,
        "done_messages": row.done_messages,
        "done_bytes": row.done_bytes,
        "copied_messages": row.copied_messages,
        "left_messages": row.left_messages,
        "left_bytes": row.left_bytes,
        "skipped_messages": row.skipped_messages,
        "started": _iso(row.started),
        "updated": _iso(row.updated),
        "seconds": round(seconds, 1) if seconds is not None else None,
        "copied_bytes": copied_bytes,
        "mb_per_second": round(copied_bytes / 1e6 / seconds, 3) if seconds else None,
        "source_seconds": float(extra.get("source_seconds") or 0),
        "target_seconds": float(extra.get("target_seconds") or 0),
        "throttle_seconds": float(extra.get("throttle_seconds") or 0),
        "error": row.last_error,
        "error_code": row.error_code,
        "last_sync": _iso(row.last_sync),
        "passes": [
            {**p, "finished": _iso(p.get("finished")), "moved": moved_text(p)}
            for p in store.passes(row.batch_id, row.job_id)
        ],
        "folders": store.folder_counts(row.batch_id, row.job_id) if with_folders else {},
        "skipped": [s.__dict__ for s in store.skipped(row.batch_id, row.job_id)],
        "events": [
            {**e.as_dict(), "time": _iso(e.time)} for e in store.events(row.batch_id, row.job_id)
        ],
    }


def select_rows(store: StateStore, batch_id: str, mailbox: str | None) -> list[MailboxStatus]:
    """The batch's rows, or those whose job id, source or target is `mailbox`."""
    rows = store.mailboxes(batch_id)
    if mailbox is None:
        return rows
    wanted = mailbox.lower()
    chosen = [
        r
        for r in rows
        if wanted in (r.job_id, r.source_identity.lower(), r.target_identity.lower())
    ]
    if not chosen:
        raise ConfigError(
            f"batch {batch_id} has no mailbox {mailbox!r} (give a job id, a source or a "
            "target identity as `migrator status` shows them)"
        )
    return chosen


def render(batch_id: str, reports: Sequence[dict[str, Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"batch_id": batch_id, "mailboxes": list(reports)}, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for report in reports:
            passes = report["passes"]
            last = passes[-1]["moved"] if passes else ""
            writer.writerow({**report, "pass_count": len(passes), "last_pass": last})
        return out.getvalue()
    return "\n".join(_text(batch_id, r) for r in reports)


def _text(batch_id: str, r: dict[str, Any]) -> str:
    lines = [
        f"== batch {batch_id}, line {r['line']}: {r['source']} -> {r['target']}",
        f"state             {r['state']}",
        f"messages          {r['done_messages']} of {r['total_messages']} at the target "
        f"({r['copied_messages']} copied by this batch)",
        f"size              {_mb(r['done_bytes'])} of {_mb(r['total_bytes'])} MB",
    ]
    if r["left_messages"]:
        lines.append(f"left (quota)      {r['left_messages']} messages, {_mb(r['left_bytes'])} MB")
    lines += [
        f"skipped           {r['skipped_messages']}",
        f"started, updated  {r['started'] or '-'}, {r['updated'] or '-'}",
        f"time              {duration_text(r['seconds'])}"
        + (f", {r['mb_per_second']} MB/s" if r["mb_per_second"] is not None else ""),
        f"waited            source {r['source_seconds']:.1f} s, target "
        f"{r['target_seconds']:.1f} s, throttled {r['throttle_seconds']:.1f} s "
        "(summed over connections)",
    ]
    if r["error"]:
        lines.append(f"error             {r['error']}")
    if r["passes"]:
        lines.append(f"last sync         {r['last_sync'] or '-'}")
        lines.append("passes (oldest first):")
        lines += [f"  {p['finished']}  {p['state']:<10}  {p['moved']}" for p in r["passes"]]
    if r["folders"]:
        lines.append("folders (messages at the target, by source folder):")
        lines += [f"  {count:>8}  {name}" for name, count in sorted(r["folders"].items())]
    for s in r["skipped"]:
        lines.append(
            f"  skipped uid {s['uid']} in {s['folder']!r} ({s['size']} bytes): {s['reason']}"
        )
    if r["events"]:
        lines.append("events:")
        lines += [f"  {e['time']}  {e['kind']:<10}  {e['text']}" for e in r["events"]]
    return "\n".join(lines) + "\n"


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f}"


def _iso(when: float | None) -> str | None:
    if not when:
        return None
    return datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds")

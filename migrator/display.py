"""Terminal output with rich: the live progress of a batch and its result table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from migrator.state import MailboxStatus, StateStore

_STATE_STYLE = {
    "done": "green",
    "synced": "green",
    "completed": "bold green",
    "quota_stopped": "yellow",
    "failed": "red",
    "not_ready": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "queued": "dim",
}


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f}"


def _age(seconds: float) -> str:
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def result_table(
    rows: Sequence[MailboxStatus],
    title: str,
    heartbeats: Mapping[str, float] | None = None,
    last_passes: Mapping[str, Mapping[str, object]] | None = None,
) -> Table:
    """The batch's table; with `heartbeats` (job id -> seconds since the last heartbeat of
    each running mailbox), a column shows how long ago each running mailbox's worker beat;
    where any mailbox has synced, a column says how long ago, and with `last_passes` (job
    id -> its last pass record) the note says what that pass moved."""
    table = Table(title=title)
    columns = ["Line", "Source", "Target", "State", "Messages", "MB", "Left", "Skipped"]
    if heartbeats is not None:
        columns.append("Heartbeat")
    synced = any(r.last_sync for r in rows)
    if synced:
        columns.append("Synced")
    for column in [*columns, "Note"]:
        table.add_column(
            column,
            justify="right"
            if column in ("Line", "Messages", "MB", "Left", "Skipped", "Heartbeat", "Synced")
            else "left",
        )
    for row in rows:
        style = _STATE_STYLE.get(row.state.value, "")
        note = row.last_error or (row.current_folder if row.state.value == "running" else "")
        if not note and row.rewritten_messages:
            note = f"rewrote {row.rewritten_addresses} addresses in {row.rewritten_messages} mails"
            if row.unparsable_headers:
                note += f", {row.unparsable_headers} headers left unparsed"
        cells = [
            str(row.line),
            row.source_identity,
            row.target_identity,
            f"[{style}]{row.state.value}[/]" if style else row.state.value,
            f"{row.done_messages}/{row.total_messages}",
            f"{_mb(row.done_bytes)}/{_mb(row.total_bytes)}",
            f"{row.left_messages}" if row.left_messages else "",
            f"{row.skipped_messages}" if row.skipped_messages else "",
        ]
        if heartbeats is not None:
            age = heartbeats.get(row.job_id)
            cells.append(_age(age) if age is not None else "")
        if synced:
            cells.append(f"{_age(time.time() - row.last_sync)} ago" if row.last_sync else "")
        last = (last_passes or {}).get(row.job_id)
        if not note and last is not None:
            note = moved_text(last)
        table.add_row(*cells, escape(note[:80]))
    return table


def moved_text(record: Mapping[str, object]) -> str:
    """What one pass moved, in a few words ("sync: 50 new, 100 flags, 20 deleted")."""
    words = [
        (record.get("new_messages"), "new"),
        (record.get("flag_changes"), "flags"),
        (record.get("deleted_messages"), "deleted"),
        (record.get("renamed_folders"), "folders renamed"),
        (record.get("new_folders"), "new folders"),
    ]
    moved = ", ".join(f"{n} {w}" for n, w in words if n)
    return f"{record.get('kind', 'pass')}: {moved or 'nothing new'}"


def _last_passes(store: StateStore, batch_id: str, rows: Sequence[MailboxStatus]) -> dict[str, Any]:
    synced = [row.job_id for row in rows if row.last_sync]
    found = store.passes_of(batch_id, synced, last=True)
    return {job_id: passes[-1] for job_id, passes in found.items() if passes}


def status_table(store: StateStore, batch_id: str, title: str) -> Table:
    """`migrator status`: the table, with the heartbeat age of each running mailbox, and
    when each mailbox last synced and what its last pass moved."""
    rows = store.mailboxes(batch_id)
    return result_table(
        rows, title, store.heartbeat_ages(batch_id), _last_passes(store, batch_id, rows)
    )


def status_json(store: StateStore, batch_id: str) -> str:
    """The batch as JSON; a running mailbox's "heartbeat_age" is the seconds since its
    worker last beat (null for the others)."""
    rows = store.mailboxes(batch_id)
    ages = store.heartbeat_ages(batch_id)
    passes = store.passes_of(batch_id, [r.job_id for r in rows])
    return json.dumps(
        {
            "batch_id": batch_id,
            "options": store.batch_meta(batch_id),
            "mailboxes": [
                {
                    **r.as_dict(),
                    "heartbeat_age": ages.get(r.job_id),
                    "passes": passes[r.job_id],
                }
                for r in rows
            ],
            "throughput": [
                {"minute": m, "messages": n, "bytes": b} for m, n, b in store.throughput(batch_id)
            ],
        },
        indent=2,
    )


def watch(
    store: StateStore,
    batch_id: str,
    console: Console,
    *,
    finished: Callable[[], bool] | None = None,
    interval: float = 0.5,
) -> list[MailboxStatus]:
    """A bar per mailbox and a total, until every mailbox is in a final state."""
    bars: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        console=console,
        transient=False,
        disable=not console.is_terminal,
    ) as progress:
        total_bar = progress.add_task("[bold]total", total=None, state="")
        while True:
            rows = store.mailboxes(batch_id)
            for row in rows:
                if row.job_id not in bars:
                    bars[row.job_id] = progress.add_task(row.source_identity, total=None, state="")
                progress.update(
                    bars[row.job_id],
                    total=row.total_messages or None,
                    completed=row.done_messages,
                    state=row.state.value,
                )
            progress.update(
                total_bar,
                total=sum(r.total_messages for r in rows) or None,
                completed=sum(r.done_messages for r in rows),
                state=f"{sum(r.state.final for r in rows)}/{len(rows)} mailboxes",
            )
            done = all(r.state.final for r in rows)
            if done or (finished is not None and finished()):
                return store.mailboxes(batch_id)
            time.sleep(interval)

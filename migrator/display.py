"""Terminal output with rich: the live progress of a batch and its result table."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn
from rich.table import Table

from migrator.state import MailboxStatus, StateStore

_STATE_STYLE = {
    "done": "green",
    "quota_stopped": "yellow",
    "failed": "red",
    "not_ready": "red",
    "interrupted": "yellow",
    "running": "cyan",
    "queued": "dim",
}


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f}"


def result_table(rows: Sequence[MailboxStatus], title: str) -> Table:
    table = Table(title=title)
    for column in (
        "Line",
        "Source",
        "Target",
        "State",
        "Messages",
        "MB",
        "Left",
        "Skipped",
        "Note",
    ):
        table.add_column(
            column,
            justify="right" if column in ("Line", "Messages", "MB", "Left", "Skipped") else "left",
        )
    for row in rows:
        style = _STATE_STYLE.get(row.state.value, "")
        note = row.last_error or (row.current_folder if row.state.value == "running" else "")
        if not note and row.rewritten_messages:
            note = f"rewrote {row.rewritten_addresses} addresses in {row.rewritten_messages} mails"
            if row.unparsable_headers:
                note += f", {row.unparsable_headers} headers left unparsed"
        table.add_row(
            str(row.line),
            row.source_identity,
            row.target_identity,
            f"[{style}]{row.state.value}[/]" if style else row.state.value,
            f"{row.done_messages}/{row.total_messages}",
            f"{_mb(row.done_bytes)}/{_mb(row.total_bytes)}",
            f"{row.left_messages}" if row.left_messages else "",
            f"{row.skipped_messages}" if row.skipped_messages else "",
            escape(note[:80]),
        )
    return table


def status_json(store: StateStore, batch_id: str) -> str:
    rows = store.mailboxes(batch_id)
    return json.dumps(
        {
            "batch_id": batch_id,
            "options": store.batch_meta(batch_id),
            "mailboxes": [r.as_dict() for r in rows],
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

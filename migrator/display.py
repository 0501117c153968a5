"""Terminal output with rich: the live progress of a batch and its result table."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from migrator.rates import Rate, duration_text, recent_rate
from migrator.state import MailboxStatus, StateStore
from migrator.totals import BatchTotals, batch_totals

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

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
    "paused": "yellow",
}


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f}"


def _clock(when: float) -> str:
    """A time to come, in UTC: "14:05:09 UTC", with the date when it is not today."""
    moment = datetime.fromtimestamp(when, UTC)
    today = datetime.now(UTC).date()
    return moment.strftime("%H:%M:%S UTC" if moment.date() == today else "%Y-%m-%d %H:%M UTC")


def result_table(
    rows: Sequence[MailboxStatus],
    title: str,
    heartbeats: Mapping[str, float] | None = None,
    last_passes: Mapping[str, Mapping[str, object]] | None = None,
    *,
    rate: Rate | None = None,
    batch_id: str = "",
) -> Table:
    """The batch's table and a totals row; with `heartbeats` (job id -> seconds since the
    last heartbeat of each running mailbox), a column shows how long ago each running
    mailbox's worker beat; where any mailbox has synced, a column says how long ago, and
    with `last_passes` (job id -> its last pass record) the note says what that pass
    moved; with `rate`, the caption says MB/s and the time left.  Notes (errors) are
    wrapped, never cut."""
    table = Table(title=title, show_footer=False)
    columns = ["Line", "Source", "Target", "State", "Messages", "MB", "Left", "Skipped"]
    if heartbeats is not None:
        columns.append("Heartbeat")
    synced = any(r.last_sync for r in rows)
    if synced:
        columns.append("Synced")
    for column in columns:
        table.add_column(column, justify="right" if column in _NUMERIC else "left")
    table.add_column("Note", overflow="fold", min_width=20)
    for row in rows:
        cells = _cells(row)
        if heartbeats is not None:
            age = heartbeats.get(row.job_id)
            cells.append(duration_text(age) if age is not None else "")
        if synced:
            since = time.time() - row.last_sync if row.last_sync else None
            cells.append(f"{duration_text(since)} ago" if since is not None else "")
        note = _note(row)
        last = (last_passes or {}).get(row.job_id)
        if not note and last is not None:
            note = moved_text(last)
        table.add_row(*cells, escape(note))
    totals = batch_totals(rows)
    table.add_section()
    cells = [
        "",
        "[bold]total[/]",
        "",
        f"{totals.finished}/{totals.mailboxes} ended",
        f"{totals.done_messages}/{totals.total_messages}",
        f"{_mb(totals.done_bytes)}/{_mb(totals.total_bytes)}",
        str(totals.left_messages or ""),
        str(totals.skipped_messages or ""),
    ]
    if heartbeats is not None:
        cells.append("")
    if synced:
        cells.append("")
    table.add_row(*cells, escape(_summary(totals, rate)))
    if totals.skipped_messages and batch_id:
        table.caption = f"`migrator report {batch_id}` names every skipped message and why"
    return table


_NUMERIC = ("Line", "Messages", "MB", "Left", "Skipped", "Heartbeat", "Synced")


def _cells(row: MailboxStatus) -> list[str]:
    style = _STATE_STYLE.get(row.state.value, "")
    return [
        str(row.line),
        escape(row.source_identity),
        escape(row.target_identity),
        f"[{style}]{row.state.value}[/]" if style else row.state.value,
        f"{row.done_messages}/{row.total_messages}",
        f"{_mb(row.done_bytes)}/{_mb(row.total_bytes)}",
        f"{row.left_messages}" if row.left_messages else "",
        f"{row.skipped_messages}" if row.skipped_messages else "",
    ]


def _note(row: MailboxStatus) -> str:
    note = row.last_error or (row.current_folder if row.state.value == "running" else "")
    if row.state.value == "paused" and row.resume_at is not None:
        note = f"resumes {_clock(row.resume_at)}: {note}"
    if not note and row.rewritten_messages:
        note = f"rewrote {row.rewritten_addresses} addresses in {row.rewritten_messages} mails"
        if row.unparsable_headers:
            note += f", {row.unparsable_headers} headers left unparsed"
    return note


def _summary(totals: BatchTotals, rate: Rate | None) -> str:
    if rate is None:
        return ""
    if totals.finished == totals.mailboxes:
        return "batch ended"
    return (
        f"{rate.mb_per_second:.2f} MB/s, {rate.messages_per_second:.1f} msg/s; "
        f"ETA {duration_text(totals.eta(rate))} for what is listed"
    )


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
    """`migrator status`: the table, with the heartbeat age of each running mailbox, when
    each mailbox last synced and what its last pass moved, the totals, the rate over the
    last minutes and the time left at it."""
    rows = store.mailboxes(batch_id)
    rate = recent_rate(store.throughput(batch_id), time.time())
    return result_table(
        rows,
        title,
        store.heartbeat_ages(batch_id),
        _last_passes(store, batch_id, rows),
        rate=rate,
        batch_id=batch_id,
    )


def status_json(store: StateStore, batch_id: str) -> str:
    """The batch as JSON; a running mailbox's "heartbeat_age" is the seconds since its
    worker last beat (null for the others)."""
    rows = store.mailboxes(batch_id)
    ages = store.heartbeat_ages(batch_id)
    totals = batch_totals(rows)
    rate = recent_rate(store.throughput(batch_id), time.time())
    passes = store.passes_of(batch_id, [r.job_id for r in rows])
    return json.dumps(
        {
            "batch_id": batch_id,
            "options": store.batch_meta(batch_id),
            "totals": {
                **totals.__dict__,
                "messages_per_second": rate.messages_per_second,
                "bytes_per_second": rate.bytes_per_second,
                "eta_seconds": totals.eta(rate),
            },
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


class _NoBars:
    """What watch() draws on where the output is no terminal: nothing (and rich.progress,
    0.02 s to import, not imported for it)."""

    def __enter__(self) -> _NoBars:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, **fields: Any) -> TaskID:
        return cast("TaskID", 0)

    def update(self, task: TaskID, **fields: Any) -> None:
        return None


def _bars(console: Console) -> Progress | _NoBars:
    if not console.is_terminal:
        return _NoBars()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}", justify="left"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        console=console,
        transient=False,
    )


def watch(
    store: StateStore,
    batch_id: str,
    console: Console,
    *,
    finished: Callable[[], bool] | None = None,
    interval: float = 0.5,
    wake: threading.Event | None = None,
) -> list[MailboxStatus]:
    """A bar per mailbox and a total (with MB/s and the time left at that rate), until
    every mailbox is in a final state (or `finished()`); redrawn every `interval` seconds,
    and at once when `wake` is set."""
    bars: dict[str, TaskID] = {}
    with _bars(console) as progress:
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
            totals = batch_totals(rows)
            rate = recent_rate(store.throughput(batch_id), time.time())
            progress.update(
                total_bar,
                total=totals.total_messages or None,
                completed=totals.done_messages,
                state=f"{totals.finished}/{totals.mailboxes} mailboxes, "
                f"{rate.mb_per_second:.2f} MB/s, ETA {duration_text(totals.eta(rate))}",
            )
            done = all(r.state.final for r in rows)
            if done or (finished is not None and finished()):
                return store.mailboxes(batch_id)
            if wake is None:
                time.sleep(interval)
            else:
                wake.wait(interval)

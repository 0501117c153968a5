"""A batch's totals over its mailbox rows: what `status`, the dashboard, /metrics and
notifications all count the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from migrator.rates import Rate, eta_seconds
from migrator.report import MailboxState
from migrator.state import MailboxStatus


@dataclass(frozen=True)
class BatchTotals:
    mailboxes: int
    states: dict[str, int] = field(default_factory=dict)
    total_messages: int = 0
    total_bytes: int = 0
    done_messages: int = 0
    done_bytes: int = 0
    copied_messages: int = 0  # sent by this batch (the rest were there already)
    skipped_messages: int = 0
    left_messages: int = 0  # left out by a quota stop
    remaining_bytes: int = 0  # still to copy in mailboxes not ended

    @property
    def finished(self) -> int:
        return sum(n for s, n in self.states.items() if MailboxState(s).final)

    def eta(self, rate: Rate) -> float | None:
        return eta_seconds(self.remaining_bytes, rate)


def batch_totals(rows: Sequence[MailboxStatus]) -> BatchTotals:
    states = {s.value: 0 for s in MailboxState}
    for row in rows:
        states[row.state.value] += 1
    return BatchTotals(
        mailboxes=len(rows),
        states=states,
        total_messages=sum(r.total_messages for r in rows),
        total_bytes=sum(r.total_bytes for r in rows),
        done_messages=sum(r.done_messages for r in rows),
        done_bytes=sum(r.done_bytes for r in rows),
        copied_messages=sum(r.copied_messages for r in rows),
        skipped_messages=sum(r.skipped_messages for r in rows),
        left_messages=sum(r.left_messages for r in rows),
        remaining_bytes=sum(
            max(0, r.total_bytes - r.done_bytes) for r in rows if not r.state.final
        ),
    )

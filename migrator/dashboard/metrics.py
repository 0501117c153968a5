"""/metrics: the batches in Redis in the Prometheus text format (prometheus_client),
counted as `migrator status` counts them (totals.py), read afresh at each scrape."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from migrator.rates import recent_rate
from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore
from migrator.totals import BatchTotals, batch_totals

# Per batch: (name, help, counter?, the value from the batch's rows and totals).
_PER_BATCH: tuple[tuple[str, str, bool, Callable[[_Batch], float]], ...] = (
    ("migrator_messages_copied", "Messages sent to the target by this batch", True,
     lambda b: b.totals.copied_messages),
    ("migrator_bytes_copied", "Bytes sent to the target by this batch", True,
     lambda b: sum(r.copied_bytes for r in b.rows)),
    ("migrator_messages_skipped", "Messages the target refused, named", True,
     lambda b: b.totals.skipped_messages),
    ("migrator_throttle_wait_seconds", "Seconds waited because a server asked to back off",
     True, lambda b: b.throttled),
    ("migrator_messages_done", "Messages at the target (copied or there already)", False,
     lambda b: b.totals.done_messages),
    ("migrator_messages_listed", "Messages listed at the sources", False,
     lambda b: b.totals.total_messages),
    ("migrator_bytes_done", "Bytes at the target", False, lambda b: b.totals.done_bytes),
    ("migrator_bytes_listed", "Bytes listed at the sources", False,
     lambda b: b.totals.total_bytes),
    ("migrator_bytes_per_second", "Bytes copied per second, last 5 minutes", False,
     lambda b: b.bytes_per_second),
)  # fmt: skip


@dataclass(frozen=True)
class _Batch:
    batch_id: str
    rows: list[MailboxStatus]
    totals: BatchTotals
    throttled: float
    bytes_per_second: float


class BatchCollector(Collector):
    """Every batch's figures, labelled by batch (and state, or error kind)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        batches = [self._read(b) for b in self._store.batch_ids()]
        for name, text, counter, value in _PER_BATCH:
            family = (CounterMetricFamily if counter else GaugeMetricFamily)(
                name, text, labels=["batch"]
            )
            for batch in batches:
                family.add_metric([batch.batch_id], value(batch))
            yield family
        mailboxes = GaugeMetricFamily(
            "migrator_mailboxes", "Mailboxes by state", labels=["batch", "state"]
        )
        errors = GaugeMetricFamily(
            "migrator_mailbox_errors", "Mailboxes ended with an error, by kind",
            labels=["batch", "kind"],
        )  # fmt: skip
        for batch in batches:
            for state, count in batch.totals.states.items():
                mailboxes.add_metric([batch.batch_id, state], count)
            for kind, count in _error_kinds(batch.rows).items():
                errors.add_metric([batch.batch_id, kind], count)
        yield from (mailboxes, errors)

    def _read(self, batch_id: str) -> _Batch:
        rows = self._store.mailboxes(batch_id)
        fields = self._store.mailbox_fields(
            batch_id, [r.job_id for r in rows], ["throttle_seconds"]
        )
        rate = recent_rate(self._store.throughput(batch_id), time.time())
        return _Batch(
            batch_id,
            rows,
            batch_totals(rows),
            sum(float(f.get("throttle_seconds") or 0) for f in fields),
            rate.bytes_per_second,
        )


def _error_kinds(rows: list[MailboxStatus]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for row in rows:
        if row.last_error and row.state is not MailboxState.RUNNING:
            kind = row.error_code or "OTHER"
            kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def metrics_text(store: StateStore) -> bytes:
    """One scrape, in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatchCollector(store))
    return generate_latest(registry)

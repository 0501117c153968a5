"""/metrics: the batches in Redis in the Prometheus text format (prometheus_client),
counted as `migrator status` counts them (totals.py), read afresh at each scrape."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from migrator.rates import recent_rate
from migrator.report import MailboxState
from migrator.state import StateStore
from migrator.totals import batch_totals


class BatchCollector(Collector):
    """Every batch's figures, labelled by batch (and state, or error kind)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        batch = ["batch"]
        copied = CounterMetricFamily(
            "migrator_messages_copied", "Messages sent to the target by this batch", labels=batch
        )
        copied_bytes = CounterMetricFamily(
            "migrator_bytes_copied", "Bytes sent to the target by this batch", labels=batch
        )
        skipped = CounterMetricFamily(
            "migrator_messages_skipped", "Messages the target refused, named", labels=batch
        )
        throttled = CounterMetricFamily(
            "migrator_throttle_wait_seconds",
            "Seconds spent waiting because a server asked to back off",
            labels=batch,
        )
        done = GaugeMetricFamily(
            "migrator_messages_done",
            "Messages at the target (copied or there already)",
            labels=batch,
        )
        listed = GaugeMetricFamily(
            "migrator_messages_listed", "Messages listed at the sources", labels=batch
        )
        done_bytes = GaugeMetricFamily("migrator_bytes_done", "Bytes at the target", labels=batch)
        listed_bytes = GaugeMetricFamily(
            "migrator_bytes_listed", "Bytes listed at the sources", labels=batch
        )
        rate = GaugeMetricFamily(
            "migrator_bytes_per_second", "Bytes copied per second, last 5 minutes", labels=batch
        )
        mailboxes = GaugeMetricFamily(
            "migrator_mailboxes", "Mailboxes by state", labels=["batch", "state"]
        )
        errors = GaugeMetricFamily(
            "migrator_mailbox_errors",
            "Mailboxes ended with an error, by kind",
            labels=["batch", "kind"],
        )
        now = time.time()
        for batch_id in self._store.batch_ids():
            rows = self._store.mailboxes(batch_id)
            totals = batch_totals(rows)
            label = [batch_id]
            copied.add_metric(label, totals.copied_messages)
            copied_bytes.add_metric(label, sum(r.copied_bytes for r in rows))
            skipped.add_metric(label, totals.skipped_messages)
            throttled.add_metric(label, self._throttled(batch_id, [r.job_id for r in rows]))
            done.add_metric(label, totals.done_messages)
            listed.add_metric(label, totals.total_messages)
            done_bytes.add_metric(label, totals.done_bytes)
            listed_bytes.add_metric(label, totals.total_bytes)
            rate.add_metric(
                label, recent_rate(self._store.throughput(batch_id), now).bytes_per_second
            )
            for state, count in totals.states.items():
                mailboxes.add_metric([batch_id, state], count)
            kinds: dict[str, int] = {}
            for row in rows:
                if row.last_error and row.state is not MailboxState.RUNNING:
                    kind = row.error_code or "OTHER"
                    kinds[kind] = kinds.get(kind, 0) + 1
            for kind, count in sorted(kinds.items()):
                errors.add_metric([batch_id, kind], count)
        yield from (copied, copied_bytes, skipped, throttled, done, listed, done_bytes)
        yield from (listed_bytes, rate, mailboxes, errors)

    def _throttled(self, batch_id: str, job_ids: list[str]) -> float:
        fields = self._store.mailbox_fields(batch_id, job_ids, ["throttle_seconds"])
        return sum(float(f.get("throttle_seconds") or 0) for f in fields)


def metrics_text(store: StateStore) -> bytes:
    """One scrape, in the Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BatchCollector(store))
    return generate_latest(registry)

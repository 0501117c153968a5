"""What velocity reads of a mailbox beyond MailboxStatus (the timings the copier keeps),
through StateStore."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from migrator.state import StateStore

# Seconds a mailbox's copy spent waiting, kept in its mbx:{bid}:{jid} hash by the copier.
SOURCE_SECONDS = "source_seconds"  # waiting on the source server (LIST, FETCH)
TARGET_SECONDS = "target_seconds"  # waiting on the target server (APPEND, SELECT)
THROTTLE_SECONDS = "throttle_seconds"  # backing off: throttling, busy server, slot waits
# Bytes this pass sent (done_bytes also counts mail found already there); optional.
COPIED_BYTES = "copied_bytes"
TIMING_FIELDS = (SOURCE_SECONDS, TARGET_SECONDS, THROTTLE_SECONDS)


@dataclass(frozen=True)
class Timings:
    """Where a mailbox's wall time went; 0 where the copier recorded nothing."""

    source_seconds: float = 0.0
    target_seconds: float = 0.0
    throttle_seconds: float = 0.0

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Timings:
        def seconds(name: str) -> float:
            try:
                return max(0.0, float(fields.get(name) or 0))
            except ValueError:  # a garbled field must not sink the whole report
                return 0.0

        return cls(seconds(SOURCE_SECONDS), seconds(TARGET_SECONDS), seconds(THROTTLE_SECONDS))

    def __add__(self, other: Timings) -> Timings:
        return Timings(
            self.source_seconds + other.source_seconds,
            self.target_seconds + other.target_seconds,
            self.throttle_seconds + other.throttle_seconds,
        )


@dataclass(frozen=True)
class Extra:
    """What velocity reads from a mailbox hash beyond MailboxStatus."""

    timings: Timings
    copied_bytes: int | None  # None: the copier did not record it


def read_extras(store: StateStore, batch_id: str, job_ids: Sequence[str]) -> dict[str, Extra]:
    """Timings and copied bytes of each job of a batch, by job id."""
    rows = store.mailbox_fields(batch_id, job_ids, [*TIMING_FIELDS, COPIED_BYTES])
    result: dict[str, Extra] = {}
    for job_id, fields in zip(job_ids, rows, strict=True):
        copied = fields.get(COPIED_BYTES)
        result[job_id] = Extra(
            Timings.from_fields(fields),
            int(copied) if copied is not None and copied.isdigit() else None,
        )
    return result

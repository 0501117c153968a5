"""How fast a batch goes and when it ends: from its per-minute throughput (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Seconds of throughput the rate "now" is taken over.
RATE_WINDOW = 300.0


@dataclass(frozen=True)
class Rate:
    messages_per_second: float
    bytes_per_second: float

    @property
    def mb_per_second(self) -> float:
        return self.bytes_per_second / 1_000_000


def recent_rate(
    throughput: Sequence[tuple[int, int, int]], now: float, window: float = RATE_WINDOW
) -> Rate:
    """The rate over the last `window` seconds (or since the first copy, if later), from
    (minute, messages, bytes) buckets; the current minute counts for the part gone by."""
    recent = [(m, n, b) for m, n, b in throughput if m + 60 > now - window]
    if not recent:
        return Rate(0.0, 0.0)
    start = max(recent[0][0], now - window)
    span = max(now - start, 1.0)
    return Rate(sum(n for _, n, _ in recent) / span, sum(b for _, _, b in recent) / span)


def eta_seconds(remaining_bytes: int, rate: Rate) -> float | None:
    """Seconds left at this rate; None when nothing moves (or nothing is left to do: 0)."""
    if remaining_bytes <= 0:
        return 0.0
    if rate.bytes_per_second <= 0:
        return None
    return remaining_bytes / rate.bytes_per_second


def duration_text(seconds: float | None) -> str:
    """ "42 s", "7 min", "3.5 h"; "?" where unknown."""
    if seconds is None:
        return "?"
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

"""argparse types for the numeric options of every subcommand (pure).

A count of 0, a negative timeout, NaN, infinity or a port past 65535 is refused when the
arguments are read: argparse exits 2 with "argument --OPTION: ...", before anything
runs. A bare `type=int` or `type=float` would take them all, and a run with
`--max-connections-per-server 0` never ends; tests/test_cli_options.py checks that no
option of any command is typed that way.

The upper bounds are far past any sensible setting; they are there because a value
like 1e300 seconds or 10**11 threads is a typing mistake that fails late (a socket
refuses such a timeout, a pool tries to make that many threads).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass


class NumberType:
    """What every numeric option's type is (so a test can find them all)."""


@dataclass(frozen=True)
class Count(NumberType):
    """A whole number from `low` to `high`."""

    low: int = 1
    high: int = 10_000

    def __call__(self, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < self.low:
            raise argparse.ArgumentTypeError(f"must be at least {self.low}: {text!r}")
        if value > self.high:
            raise argparse.ArgumentTypeError(f"must be at most {self.high:,}: {text!r}")
        return value


@dataclass(frozen=True)
class Amount(NumberType):
    """A finite decimal number more than 0 (or, with `zero`, at least 0), up to `high`."""

    high: float
    zero: bool = False

    def __call__(self, text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):  # nan, inf, 1e400
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        if value < 0 or (value == 0 and not self.zero):
            least = "at least 0" if self.zero else "more than 0"
            raise argparse.ArgumentTypeError(f"must be {least}: {text!r}")
        if value > self.high:
            raise argparse.ArgumentTypeError(f"must be at most {self.high:,g}: {text!r}")
        return value


@dataclass(frozen=True)
class CountList(NumberType):
    """'1,2,4,8' -> [1, 2, 4, 8]: each a Count, none repeated, at least one."""

    each: Count

    def __call__(self, text: str) -> list[int]:
        values = [self.each(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError("give at least one number, e.g. 1,2,4")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"a number is repeated: {text!r}")
        return values


HOUR = 3600.0


@dataclass(frozen=True)
class Duration(NumberType):
    """A time span in seconds from "90s", "30m", "6h" or "1d" (a bare number: seconds),
    at least `low` seconds, at most `high`."""

    low: float = 1.0
    high: float = 366 * 24 * HOUR

    def __call__(self, text: str) -> float:
        units = {"s": 1.0, "m": 60.0, "h": HOUR, "d": 24 * HOUR}
        number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1.0)
        try:
            value = float(number) * unit
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a time span like 6h or 30m: {text!r}") from None
        if not math.isfinite(value) or value < self.low:
            raise argparse.ArgumentTypeError(f"must be at least {self.low:g} s: {text!r}")
        if value > self.high:
            raise argparse.ArgumentTypeError(f"must be at most {self.high / HOUR:g} h: {text!r}")
        return value


PORT = Count(1, 65_535)
# Connections and mailboxes at once (per server, per endpoint, per mailbox).
CONNECTIONS = Count(1, 10_000)
# Threads of an in-process pool: each mailbox holds a source and a target connection.
WORKERS = Count(1, 1_000)
# A socket timeout: an hour is already far longer than any server needs to answer.
TIMEOUT = Amount(high=HOUR)
# Seconds to wait for something; 0 means not at all.
GRACE = Amount(high=HOUR, zero=True)
# Seconds to wait for workers' answers.
WAIT = Amount(high=24 * HOUR)

INTERVAL = Duration()

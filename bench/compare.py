"""migrator beside imapsync and dsync on the large mailbox, and the limit: interleaved runs,
medians reported, every run checked message by message at the target (bench.check).

One round runs each tool once into a fresh target account, in turn; RUNS rounds give each
tool RUNS runs spread over the same stretch of time, so a busier minute of a shared machine
falls on all of them alike.
"""

from __future__ import annotations

import ssl
import statistics
from collections import Counter
from collections.abc import Callable
from typing import Any

from bench.check import digests, verdict

# (label, bench.copy mode, connections per mailbox for ours)
TOOLS: tuple[tuple[str, str, int], ...] = (
    ("imapsync 2.229", "imapsync", 0),
    ("dsync (imapc)", "dsync", 0),
    ("migrator, 4 connections", "migrator", 4),
    ("migrator, 1 connection", "migrator", 1),
)
LIMIT = ("limit: doveadm import at the target", "limit", 0)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time (its own CPU and memory with it), and every wall time."""
    ordered = sorted(runs, key=lambda r: float(r["wall"]))
    middle = dict(ordered[(len(ordered) - 1) // 2])
    middle["walls"] = [round(float(r["wall"]), 2) for r in runs]
    middle["median_wall"] = statistics.median(float(r["wall"]) for r in runs)
    return middle


def compare(
    network: str,
    rounds: int,
    port: int,
    measure: Callable[[str, dict[str, Any]], dict[str, Any]],
    spec: Callable[..., dict[str, Any]],
    add_user: Callable[[str], None],
    ctx: ssl.SSLContext,
    password: str,
    source: Counter[str],
    with_limit: bool,
    tools: tuple[tuple[str, str, int], ...] = TOOLS,
) -> dict[str, dict[str, Any]]:
    """{label: median run} of each tool over `rounds` interleaved rounds at `port`."""
    tools = tools + ((LIMIT,) if with_limit else ())
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in tools}
    for r in range(rounds):
        for label, mode, connections in tools:
            # Account names: lowercase, no spaces ("10 ms RTT" -> "10msrtt").
            tag = "".join(c for c in network.lower() if c.isalnum())
            side = f"{mode}{connections or ''}-{tag}{r}"
            add_user(f"big-{side}@bench.test")
            run = measure(mode, spec(["big"], side, port=port, connections=connections or 4))
            target = digests(port, ctx, f"big-{side}@bench.test", password)
            problem = verdict(source, target)
            if problem:
                raise SystemExit(f"{label}, {network}, run {r + 1}: {problem}")
            run["messages"], run["bytes"] = sum(source.values()), run.get("bytes") or 0
            runs[label].append(run)
    return {label: median_run(found) for label, found in runs.items()}


def ratio_lines(network: str, results: dict[str, dict[str, Any]]) -> list[str]:
    """How migrator stands against each anchor, as wall-time ratios (above 1: migrator is
    faster), and how close each tool comes to the limit."""
    ours = results["migrator, 4 connections"]["median_wall"]
    one = results["migrator, 1 connection"]["median_wall"]
    lines = []
    for anchor in ("imapsync 2.229", "dsync (imapc)"):
        if anchor not in results:
            continue
        theirs = results[anchor]["median_wall"]
        lines.append(
            f"{network}: migrator {theirs / ours:.2f}x {anchor} "
            f"(one connection: {theirs / one:.2f}x)"
        )
    if LIMIT[0] in results:
        floor = results[LIMIT[0]]["median_wall"]
        close = ", ".join(
            f"{label} {floor / r['median_wall']:.2f}"
            for label, r in results.items()
            if label != LIMIT[0]
        )
        lines.append(f"{network}: share of the limit's speed: {close}")
    return lines

"""EWS to IMAP in `make bench`: a mailbox on the test EWS server (tests/ews_server, over
HTTP on loopback, in the bench's own process) copied by migrator into the bench's Dovecot,
checked message by message at the target, in MB/s.

The test server answers from memory and validates every request and response against
Microsoft's schema, so its own CPU is part of what a run waits for; it shares the machine's
cores with migrator, as Exchange would not.
"""

from __future__ import annotations

import hashlib
import random
import ssl
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ews_server import EwsServer
from servers.mailgen import FIRST_DATE, make_message

from bench.check import digests, verdict

EWS_PASSWORD = "bench-Ews-Pw1"
EWS_SEED = 20261205


def seed_ews(ews: EwsServer, smtp: str, count: int) -> tuple[Counter[str], int]:
    """`count` generated messages (about 50 KB each, some larger) delivered into the
    source mailbox's Inbox, each with its own received time; their digests and bytes."""
    ews.add_user(smtp, EWS_PASSWORD)
    mailbox = ews.store.mailboxes[smtp.lower()]
    rng = random.Random(EWS_SEED)
    found: Counter[str] = Counter()
    total = 0
    for i in range(count):
        hint = rng.choice((4_000, 10_000, 25_000, 60_000))
        raw, _date = make_message(i, folder="INBOX", size_hint=hint, seed=EWS_SEED)
        item = mailbox.deliver(raw)
        item.received = FIRST_DATE + timedelta(minutes=i)
        found[hashlib.sha256(raw).hexdigest()] += 1
        total += len(raw)
    return found, total


def ews_to_imap(
    count: int,
    rounds: int,
    port: int,
    ctx: ssl.SSLContext,
    password: str,
    add_user: Callable[[str], None],
    measure: Callable[[str, dict[str, Any]], dict[str, Any]],
    spec: Callable[..., dict[str, Any]],
) -> list[dict[str, Any]]:
    """`rounds` runs of migrator copying one EWS mailbox of `count` messages into Dovecot."""
    runs = []
    with EwsServer() as ews:
        source, size = seed_ews(ews, "ews-src@bench.test", count)
        for r in range(rounds):
            target = f"ews-ews{r}@bench.test"
            add_user(target)
            run_spec = spec(["ews"], f"ews{r}", connections=1)
            run_spec["target_server"] = run_spec["server"]
            run_spec["server"] = f"http://127.0.0.1:{ews.port}"
            run_spec["password"] = EWS_PASSWORD
            run = measure("ews", run_spec)
            problem = verdict(source, digests(port, ctx, target, password))
            if problem:
                raise SystemExit(f"EWS to IMAP, run {r + 1}: {problem}")
            run["messages"], run["bytes"] = count, size
            runs.append(run)
    return runs


def ews_line(run: dict[str, Any]) -> str:
    """The median EWS to IMAP run as one line, in MB/s."""
    return (
        f"EWS to IMAP (test EWS server, loopback): {run['messages']} messages, "
        f"{run['bytes'] / 1e6:.1f} MB in {run['median_wall']:.1f} s "
        f"(runs {' '.join(f'{w:.1f}' for w in run['walls'])}): "
        f"{run['bytes'] / 1e6 / run['median_wall']:.1f} MB/s, CPU {run['cpu']:.1f} s "
        f"({run['cpu'] / max(run['bytes'] / 1e6, 1e-9):.3f} CPU s per MB: migrator's whole "
        f"process, reading EWS and writing IMAP), peak {run['peak_mb']:.0f} MB"
    )

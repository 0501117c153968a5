"""`make bench`: our copier against a plain sequential baseline, imapsync, Dovecot's dsync
and the limit (the target Dovecot importing the mail itself), in the same run.

A private Dovecot gets, from a fixed seed, one large mailbox (3,000 messages, about
150 MB, ten folders, a realistic size mix with a few multi-megabyte attachments),
ten small mailboxes, and a mailbox holding one 50 MB message.  Each copy runs in its
own process (bench/copy.py), so its CPU seconds and peak memory are its own.
"""

from __future__ import annotations

import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imapclient import IMAPClient
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from servers.certs import TlsFiles, make_tls_files  # noqa: E402
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer  # noqa: E402
from servers.mailgen import make_message  # noqa: E402
from servers.redis import RedisServer  # noqa: E402

from bench.check import digests  # noqa: E402
from bench.compare import compare, median_run, ratio_lines  # noqa: E402
from bench.empty import empty_lines, empty_runs  # noqa: E402
from bench.ews import ews_line, ews_to_imap  # noqa: E402
from bench.latency import LatencyProxy  # noqa: E402
from bench.scale import scale, scale_lines  # noqa: E402
from migrator.copier import CONNECTIONS_PER_MAILBOX  # noqa: E402

SEED = 20261128
EWS_MESSAGES = 600  # about 20 MB on the test EWS server
LATENCY_MS = 5  # one way
PASSWORD = "bench-Pw-1"
FOLDERS = [
    "INBOX", "Sent Messages", "Drafts", "Trash", "Spam",
    "Projects", "Projects/2024", "Archive/2019", "Archive/2020", "Données",
]  # fmt: skip
console = Console(width=max(110, Console().width))  # the table whole, even in a pipe


def size_mix(rng: random.Random) -> int:
    """Mostly small mail, some with documents, a few large attachments: ~50 KB mean."""
    roll = rng.random()
    if roll < 0.72:
        return rng.randint(2_000, 15_000)
    if roll < 0.97:
        return rng.randint(20_000, 150_000)
    if roll < 0.997:
        return rng.randint(200_000, 800_000)
    return rng.randint(2_000_000, 5_000_000)


def fill(server: DovecotServer, ctx: ssl.SSLContext, user: str, count: int, seed: int) -> int:
    rng = random.Random(seed)
    total = 0
    with IMAPClient("127.0.0.1", server.imaps_port, ssl_context=ctx, timeout=300) as client:
        client.login(user, PASSWORD)
        for folder in FOLDERS:
            if not client.folder_exists(folder):
                client.create_folder(folder)
        batch: list[dict[str, Any]] = []
        batch_bytes = 0
        for i in range(count):
            folder = FOLDERS[rng.randrange(len(FOLDERS))]
            # make_message varies sizes from 0.3x to 3x its hint: aim the hint at the mix.
            raw, date = make_message(i, folder=folder, size_hint=size_mix(rng) // 2, seed=seed)
            batch.append({"folder": folder, "msg": raw, "date": date, "flags": [b"\\Seen"]})
            batch_bytes += len(raw)
            total += len(raw)
            if batch_bytes > 8_000_000 or i == count - 1:
                for f in {m["folder"] for m in batch}:
                    client.multiappend(f, [m for m in batch if m["folder"] == f])
                batch, batch_bytes = [], 0
    return total


def huge(server: DovecotServer, ctx: ssl.SSLContext, user: str) -> None:
    raw, date = make_message(0, folder="INBOX", size_hint=10, seed=SEED)
    header, _, body = raw.partition(b"\r\n\r\n")
    filler = (b"x" * 76 + b"\r\n") * (50 * 1024 * 1024 // 78)
    with IMAPClient("127.0.0.1", server.imaps_port, ssl_context=ctx, timeout=300) as client:
        client.login(user, PASSWORD)
        client.append("INBOX", header + b"\r\n\r\n" + body + filler, (), date)


def warm(server: DovecotServer, ctx: ssl.SSLContext, user: str) -> None:
    """Read a mailbox once as the copiers will (sizes, dates, flags, the key fields, the
    bodies): Dovecot builds its caches for a mailbox on its first reading, which would
    otherwise slow whichever run comes first (the baseline, one after another)."""
    with IMAPClient("127.0.0.1", server.imaps_port, ssl_context=ctx, timeout=300) as client:
        client.login(user, PASSWORD)
        for flags, _delimiter, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            uids = client.search("ALL")
            for start in range(0, len(uids), 100):
                client.fetch(
                    uids[start : start + 100],
                    ["INTERNALDATE", "RFC822.SIZE", "FLAGS",
                     "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]", "BODY.PEEK[]"],
                )  # fmt: skip


def spec_maker(
    server: DovecotServer, tls: TlsFiles, redis_url: str
) -> Callable[..., dict[str, Any]]:
    """What bench.copy is told of a run: its pairs "{name}-src" to "{name}-{side}"."""

    def spec(
        names: list[str],
        side: str,
        parallel: int = 1,
        port: int = server.imaps_port,
        connections: int = CONNECTIONS_PER_MAILBOX,
    ) -> dict[str, Any]:
        return {
            "connections": connections,
            "port": port,
            "conf": str(server.config_path),
            "homes": {
                f"{n}-src@bench.test": str(server.home(f"{n}-src@bench.test")) for n in names
            },
            "server": f"imaps://127.0.0.1:{port}",
            "ca_file": str(tls.ca_cert),
            "password": PASSWORD,
            "admin": MASTER_USER,
            "admin_password": MASTER_PASSWORD,
            "redis_url": redis_url,
            "batch_id": f"bench-{side}-{names[0]}",
            "parallel": parallel,
            "pairs": [
                {"source": f"{n}-src@bench.test", "target": f"{n}-{side}@bench.test"} for n in names
            ],
        }

    return spec


def measure(mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.copy", mode, json.dumps(spec)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench.copy {mode} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    if os.environ.get("SIZE"):
        return main_scale(int(os.environ["SIZE"]), int(os.environ.get("RUNS", "3")))
    with tempfile.TemporaryDirectory(prefix="migrator-bench-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 -- Dovecot's unprivileged users must reach it
        tls = make_tls_files(Path(tmp) / "tls")
        ctx = ssl.create_default_context(cafile=tls.ca_cert)
        with (
            DovecotServer(master_users={MASTER_USER: MASTER_PASSWORD}, tls=tls) as server,
            RedisServer() as redis_server,
        ):
            users = ["big", "huge"] + [f"small{i}" for i in range(10)]
            for name in users:
                for side in (
                    "src", "ours", "one", "base", "seq", "par", "lours", "lone", "lbase", "lseq",
                    "lpar",
                ):  # fmt: skip
                    server.add_user(f"{name}-{side}@bench.test", PASSWORD)
            started = time.perf_counter()
            size = fill(server, ctx, "big-src@bench.test", 3000, SEED)
            for i in range(10):
                fill(server, ctx, f"small{i}-src@bench.test", 200, SEED + i + 1)
            huge(server, ctx, "huge-src@bench.test")
            console.print(
                f"generated 3,000 messages ({size / 1e6:.0f} MB), 10 x 200 small, and one "
                f"50 MB message in {time.perf_counter() - started:.0f} s (seed {SEED})"
            )
            for name in users:
                warm(server, ctx, f"{name}-src@bench.test")

            spec = spec_maker(server, tls, redis_server.url)

            small = [f"small{i}" for i in range(10)]
            near = {
                "large mailbox: baseline": measure("baseline", spec(["big"], "base")),
                "large mailbox: migrator": measure("ours", spec(["big"], "ours")),
                "large, one connection": measure("ours", spec(["big"], "one", connections=1)),
                "10 small, one after another": measure("ours", spec(small, "seq", 1)),
                "10 small, in parallel": measure("ours", spec(small, "par", 10)),
                "one 50 MB message: migrator": measure("ours", spec(["huge"], "ours")),
            }
            source = digests(server.imaps_port, ctx, "big-src@bench.test", PASSWORD)
            rounds = int(os.environ.get("RUNS", "3"))
            ews_runs = ews_to_imap(
                EWS_MESSAGES, rounds, server.imaps_port, ctx, PASSWORD,
                lambda name: server.add_user(name, PASSWORD), measure, spec,
            )  # fmt: skip
            console.print(ews_line(median_run(ews_runs)))

            def add_user(name: str) -> None:
                server.add_user(name, PASSWORD)

            anchored = {
                "loopback": compare(
                    "loopback",
                    rounds,
                    server.imaps_port,
                    measure,
                    spec,
                    add_user,
                    ctx,
                    PASSWORD,
                    source,
                    with_limit=True,
                )
            }
            print_anchored(anchored, rounds)  # as it stands: a later failure keeps this
            # The fixed cost: an empty mailbox, migrator beside dsync (bench.empty).
            empty = empty_runs(max(rounds, 5), server.imaps_port, measure, spec, add_user)
            for line in empty_lines(empty):
                console.print(line)
            # The same over a network with a round trip of 2 x LATENCY_MS, where fewer
            # round trips and overlapping reads and writes matter most.
            with LatencyProxy(server.imaps_port, LATENCY_MS / 1000) as proxy:
                p = proxy.port
                far = {
                    "large mailbox: baseline": measure("baseline", spec(["big"], "lbase", port=p)),
                    "large mailbox: migrator": measure("ours", spec(["big"], "lours", port=p)),
                    "large, one connection": measure(
                        "ours", spec(["big"], "lone", port=p, connections=1)
                    ),
                    "10 small, one after another": measure("ours", spec(small, "lseq", 1, p)),
                    "10 small, in parallel": measure("ours", spec(small, "lpar", 10, p)),
                }
                anchored[f"{2 * LATENCY_MS} ms RTT"] = compare(
                    f"{2 * LATENCY_MS} ms RTT", rounds, p, measure, spec, add_user, ctx,
                    PASSWORD, source, with_limit=False,
                )  # fmt: skip
    rows = [(f"loopback, {name}", r) for name, r in near.items()]
    rows += [(f"{2 * LATENCY_MS} ms RTT, {name}", r) for name, r in far.items()]
    table = Table(
        title=f"make bench (migrator: up to {CONNECTIONS_PER_MAILBOX} connections per mailbox)"
    )
    for column in ("run", "messages", "MB", "seconds", "msg/s", "MB/s", "CPU s", "peak MB"):
        table.add_column(column, justify="left" if column == "run" else "right")
    for name, r in rows:
        table.add_row(
            name,
            str(r["messages"]),
            f"{r['bytes'] / 1e6:.1f}",
            f"{r['wall']:.1f}",
            f"{r['messages'] / r['wall']:.0f}",
            f"{r['bytes'] / 1e6 / r['wall']:.1f}",
            f"{r['cpu']:.1f}",
            f"{r['peak_mb']:.0f}",
        )
    console.print(table)
    for label, runs in (("loopback", near), (f"{2 * LATENCY_MS} ms round trips", far)):
        base, ours_ = runs["large mailbox: baseline"], runs["large mailbox: migrator"]
        one = runs["large, one connection"]
        seq, par = runs["10 small, one after another"], runs["10 small, in parallel"]
        console.print(
            f"{label}: large mailbox {base['wall'] / ours_['wall']:.2f}x the baseline "
            f"(over one connection: {base['wall'] / one['wall']:.2f}x); 10 mailboxes in "
            f"parallel {seq['wall'] / par['wall']:.2f}x faster than one after another"
        )
    console.print(
        f"peak memory with a 50 MB message: {near['one 50 MB message: migrator']['peak_mb']:.0f} MB"
    )
    print_anchored(anchored, rounds)
    for line in empty_lines(empty):
        console.print(line)
    ews = median_run(ews_runs)
    console.print(ews_line(ews))
    (REPO / "bench" / "results.json").write_text(
        json.dumps(
            {
                "runs": [{"run": name, **r} for name, r in rows],
                "anchored": anchored,
                "empty_mailbox": empty,
                "ews_to_imap": ews,
            },
            indent=2,
        )
        + "\n"
    )
    return 0


def main_scale(count: int, rounds: int) -> int:
    """`make bench SIZE=N`: migrator and dsync on one N-message mailbox (bench.scale)."""
    with tempfile.TemporaryDirectory(prefix="migrator-bench-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 -- Dovecot's unprivileged users must reach it
        tls = make_tls_files(Path(tmp) / "tls")
        ctx = ssl.create_default_context(cafile=tls.ca_cert)
        with (
            DovecotServer(master_users={MASTER_USER: MASTER_PASSWORD}, tls=tls) as server,
            RedisServer() as redis_server,
        ):
            results = scale(
                count, rounds, server, ctx, PASSWORD, measure,
                spec_maker(server, tls, redis_server.url), make_message, console.print,
            )  # fmt: skip
    lines = scale_lines(count, results)
    for line in lines:
        console.print(line)
    (REPO / "bench" / f"results-{count}.json").write_text(
        json.dumps({"size": count, "results": results, "lines": lines}, indent=2) + "\n"
    )
    return 0


def print_anchored(anchored: dict[str, dict[str, dict[str, Any]]], rounds: int) -> None:
    """The large mailbox with each tool: medians of `rounds` interleaved runs."""
    table = Table(title=f"the large mailbox, each tool (median of {rounds} interleaved runs)")
    for column in ("network", "tool", "seconds", "runs (s)", "CPU s", "peak MB"):
        table.add_column(column, justify="left" if column in ("network", "tool") else "right")
    for network, results in anchored.items():
        for label, r in results.items():
            table.add_row(
                network,
                label,
                f"{r['median_wall']:.1f}",
                " ".join(f"{w:.1f}" for w in r["walls"]),
                f"{r['cpu']:.1f}",
                f"{r['peak_mb']:.0f}",
            )
    console.print(table)
    for network, results in anchored.items():
        for line in ratio_lines(network, results):
            console.print(line)


if __name__ == "__main__":
    sys.exit(main())

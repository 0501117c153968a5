"""`make bench` itself, small: each tool it measures copies a mailbox and is checked message
by message at the target, so the bench cannot rot between the runs that measure."""

from __future__ import annotations

import ssl
from pathlib import Path

from servers.certs import TlsFiles
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer
from servers.redis import RedisServer

from bench.check import digests, verdict
from bench.compare import compare as compare_tools
from bench.compare import median_run, ratio_lines
from bench.ews import ews_line, ews_to_imap
from bench.run import PASSWORD, SEED, fill, measure, spec_maker

# imapsync's Perl modules come with `make bench`, not `make setup`: the rest run here.
TOOLS = (
    ("dsync (imapc)", "dsync", 0),
    ("migrator, 4 connections", "migrator", 4),
    ("migrator, 1 connection", "migrator", 1),
)


def test_each_tool_of_the_bench_copies_the_mailbox_checked_at_the_target(
    tls_files: TlsFiles, ssl_context: ssl.SSLContext, redis_server: RedisServer, tmp_path: Path
) -> None:
    with DovecotServer(master_users={MASTER_USER: MASTER_PASSWORD}, tls=tls_files) as server:
        server.add_user("big-src@bench.test", PASSWORD)
        fill(server, ssl_context, "big-src@bench.test", 60, SEED)
        source = digests(server.imaps_port, ssl_context, "big-src@bench.test", PASSWORD)
        spec = spec_maker(server, tls_files, redis_server.url)

        results = compare_tools(
            "loopback", 1, server.imaps_port, measure, spec,
            lambda name: server.add_user(name, PASSWORD), ssl_context, PASSWORD, source,
            with_limit=True, tools=TOOLS,
        )  # fmt: skip
        for mode, side in (("ours", "ours"), ("baseline", "base")):
            server.add_user(f"big-{side}@bench.test", PASSWORD)
            run = measure(mode, spec(["big"], side))
            assert run["messages"] == sum(source.values())
            target = digests(server.imaps_port, ssl_context, f"big-{side}@bench.test", PASSWORD)
            assert verdict(source, target) == ""

    assert sum(source.values()) == 60
    assert set(results) == {label for label, _, _ in TOOLS} | {
        "limit: doveadm import at the target"
    }
    assert all(r["median_wall"] > 0 and r["messages"] == 60 for r in results.values())
    lines = ratio_lines("loopback", results)
    assert lines[0].startswith("loopback: migrator ") and "dsync (imapc)" in lines[0]
    assert "share of the limit's speed" in lines[-1]


def test_the_bench_copies_an_ews_mailbox_into_imap_checked_at_the_target(
    tls_files: TlsFiles, ssl_context: ssl.SSLContext, redis_server: RedisServer
) -> None:
    with DovecotServer(master_users={MASTER_USER: MASTER_PASSWORD}, tls=tls_files) as server:
        spec = spec_maker(server, tls_files, redis_server.url)
        runs = ews_to_imap(
            12, 1, server.imaps_port, ssl_context, PASSWORD,
            lambda name: server.add_user(name, PASSWORD), measure, spec,
        )  # fmt: skip

    (run,) = runs
    assert run["messages"] == 12 and run["bytes"] > 12 * 1000 and run["wall"] > 0
    line = ews_line(median_run(runs))
    assert line.startswith("EWS to IMAP") and "MB/s" in line and "CPU s per MB" in line

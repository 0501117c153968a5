"""One measured copy, run in its own process so CPU and peak memory are its own.

    python -m bench.copy MODE JSON_SPEC

MODE is `ours` (the migrator runner, as a worker runs it), `ews` (the same from an
EWS source: spec["server"] the EWS endpoint, spec["target_server"] the IMAP target),
`baseline` (a plain loop: fetch one message, append it), or one of bench.anchors' tools (`imapsync`,
`dsync`, `limit`), run as this process's child.  Prints one JSON line: wall, cpu,
peak_mb (the tool's own: this process's, or its children's), and for ours and baseline
the messages and bytes they say they copied (bench.check counts what arrived).
"""

from __future__ import annotations

import json
import resource
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from bench import anchors
from migrator.batch import AccessMethod, parse_batch, parse_server
from migrator.connectors import connector
from migrator.connectors.ews.settings import EwsAccess, EwsSettings
from migrator.copier import CONNECTIONS_PER_MAILBOX
from migrator.model import AdminLogin, ConnectOptions
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.runner import execute_job
from migrator.secrets import Secret, SecretBox, new_key
from migrator.state import StateStore


def ours(spec: dict[str, Any], source_kind: str = "imap") -> tuple[int, int]:
    box = SecretBox(new_key())
    store = StateStore.from_url(spec["redis_url"])
    rows = "SourceIdentity,SourceServer,SourceLoginID,SourcePassword,TargetIdentity\r\n" + "".join(
        f"{p['source']},{spec['server']},{p['source']},{spec['password']},{p['target']}\r\n"
        for p in spec["pairs"]
    )
    parsed = parse_batch(rows, AccessMethod.INDIVIDUAL, protocol=connector(source_kind).protocol)
    assert not parsed.problems, parsed.problems
    options = RunOptions(
        target=TargetSpec(
            server=parse_server(spec.get("target_server", spec["server"])),
            method=AccessMethod.PROXYAUTH,
            admin=AdminLogin(spec["admin"], Secret(spec["admin_password"])),
        ),
        connect=ConnectOptions(timeout=120, ca_file=spec["ca_file"]),
        max_connections_per_server=64,
        connections_per_mailbox=spec.get("connections", CONNECTIONS_PER_MAILBOX),
    )
    if source_kind == "ews":  # the test EWS server: plain HTTP, each row its endpoint
        options = replace(
            options,
            source_kind="ews",
            source_settings=EwsSettings(
                endpoint=None,
                access=EwsAccess.DELEGATE,
                version="Exchange2016",
                connect=ConnectOptions(timeout=120, allow_plaintext=True),
            ),
            connect=replace(options.connect, allow_plaintext=True),
        )
    jobs = build_jobs(parsed.jobs, options, box)
    batch = spec["batch_id"]
    store.create_batch(batch, {}, jobs)
    with ThreadPoolExecutor(max_workers=spec.get("parallel", 1)) as pool:
        list(pool.map(lambda j: execute_job(store, batch, j.job_id, box), jobs))
    rows_done = store.mailboxes(batch)
    return sum(r.done_messages for r in rows_done), sum(r.done_bytes for r in rows_done)


def baseline(spec: dict[str, Any]) -> tuple[int, int]:
    """The plain way: for each folder, for each message, FETCH it, APPEND it."""
    context = ssl.create_default_context(cafile=spec["ca_file"])
    server = parse_server(spec["server"])
    messages = size = 0
    for pair in spec["pairs"]:
        src = IMAPClient(server.host, server.port, ssl=True, ssl_context=context, timeout=120)
        dst = IMAPClient(server.host, server.port, ssl=True, ssl_context=context, timeout=120)
        src.login(pair["source"], spec["password"])
        dst.plain_login(
            spec["admin"], spec["admin_password"], authorization_identity=pair["target"]
        )
        for flags, _delim, name in src.list_folders():
            if b"\\Noselect" in flags:
                continue
            if not dst.folder_exists(name):
                dst.create_folder(name)
            src.select_folder(name, readonly=True)
            for uid in src.search("ALL"):
                data = src.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid]
                body = data[b"BODY[]"]
                kept = [f for f in data[b"FLAGS"] if f != b"\\Recent"]
                dst.append(name, body, kept, data[b"INTERNALDATE"])
                messages += 1
                size += len(body)
        src.logout()
        dst.logout()
    return messages, size


def peak_mb() -> float:
    """This process's own peak resident memory (VmHWM; ru_maxrss would carry the
    parent's peak across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def children() -> tuple[float, float]:
    """CPU seconds and peak MB of the children that ended."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    start, cpu = time.perf_counter(), time.process_time()
    if mode in ("ours", "baseline", "ews"):
        if mode == "baseline":
            messages, size = baseline(spec)
        else:
            messages, size = ours(spec, "ews" if mode == "ews" else "imap")
        wall, used, peak = time.perf_counter() - start, time.process_time() - cpu, peak_mb()
    else:
        getattr(anchors, mode)(spec)
        wall = time.perf_counter() - start
        messages, size = 0, 0
        used, peak = children()
    print(
        json.dumps(
            {"wall": wall, "cpu": used, "peak_mb": peak, "messages": messages, "bytes": size}
        )
    )


if __name__ == "__main__":
    main()

"""One measured copy, run in its own process so CPU and peak memory are its own.

    python -m bench.copy MODE JSON_SPEC

MODE is `ours` (the migrator runner, as a worker runs it) or `baseline` (a plain
loop: fetch one message, append it).  Prints one JSON line: wall, cpu, peak_mb,
messages, bytes.
"""

from __future__ import annotations

import json
import resource
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from migrator.batch import AccessMethod, parse_batch, parse_server
from migrator.copier import CONNECTIONS_PER_MAILBOX
from migrator.model import AdminLogin, ConnectOptions
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.runner import execute_job
from migrator.secrets import Secret, SecretBox, new_key
from migrator.state import StateStore


def ours(spec: dict[str, Any]) -> tuple[int, int]:
    box = SecretBox(new_key())
    store = StateStore.from_url(spec["redis_url"])
    rows = "SourceIdentity,SourceServer,SourceLoginID,SourcePassword,TargetIdentity\r\n" + "".join(
        f"{p['source']},{spec['server']},{p['source']},{spec['password']},{p['target']}\r\n"
        for p in spec["pairs"]
    )
    parsed = parse_batch(rows, AccessMethod.INDIVIDUAL)
    assert not parsed.problems, parsed.problems
    options = RunOptions(
        target=TargetSpec(
            server=parse_server(spec["server"]),
            method=AccessMethod.PROXYAUTH,
            admin=AdminLogin(spec["admin"], Secret(spec["admin_password"])),
        ),
        connect=ConnectOptions(timeout=120, ca_file=spec["ca_file"]),
        max_connections_per_server=64,
        connections_per_mailbox=spec.get("connections", CONNECTIONS_PER_MAILBOX),
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


def main() -> None:
    mode, spec = sys.argv[1], json.loads(sys.argv[2])
    start, cpu = time.perf_counter(), time.process_time()
    messages, size = (ours if mode == "ours" else baseline)(spec)
    print(
        json.dumps(
            {
                "wall": time.perf_counter() - start,
                "cpu": time.process_time() - cpu,
                "peak_mb": peak_mb(),
                "messages": messages,
                "bytes": size,
            }
        )
    )


if __name__ == "__main__":
    main()

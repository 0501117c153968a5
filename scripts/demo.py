"""`make demo`: three mailboxes from one Dovecot into another, one of them past its quota.

Everything (certificates, both Dovecots, the state directory with `migrator run`'s private
Redis) lives in one temporary directory, removed at the end. Exit 0 means alice and bob
arrived whole and carol stopped at her quota, as planned; `migrator run` itself exits 1 then,
since not every mailbox is synced.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

REPO = Path(__file__).resolve().parent.parent
# tests/ has no __init__.py: its helpers import as servers.*, as they do under pytest.
sys.path.insert(0, str(REPO / "tests"))

from servers.certs import make_tls_files  # noqa: E402
from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer  # noqa: E402
from servers.mailgen import populate  # noqa: E402

PEOPLE = ("alice", "bob", "carol")
SOURCE_PASSWORD = "demo-source-Pw1"
# About a hundred messages each: nested, non-ASCII and special-use folders all get a turn.
FOLDERS = {
    "INBOX": 40,
    "Sent Messages": 20,
    "Projects": 6,
    "Projects/2024": 14,
    "Données": 10,
    "Spam": 5,
    "Trash": 8,
}
EXPECTED = {"alice": "synced", "bob": "synced", "carol": "quota_stopped"}
BATCH_ID = "demo"
BATCH_COLUMNS = (
    "SourceIdentity",
    "SourceServer",
    "SourceLoginID",
    "SourcePassword",
    "TargetIdentity",
)
QUOTA_COLUMNS = ("Identity", "SubscriptionIds", "UserLocation", "MailboxQuotaSize")


def write_csv(path: Path, columns: Sequence[str], rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\r\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def fill_sources(
    source: DovecotServer, target: DovecotServer, context: ssl.SSLContext
) -> dict[str, int]:
    """Create every source and target user, fill the sources; return each mailbox's bytes."""
    sizes: dict[str, int] = {}
    for seed, person in enumerate(PEOPLE):
        login = f"{person}@source.test"
        source.add_user(login, SOURCE_PASSWORD)
        target.add_user(f"{person}@target.test", "unused-target-Pw1")
        messages = populate(
            source.host, source.imaps_port, login, SOURCE_PASSWORD, FOLDERS,
            ssl_context=context, seed=seed,
        )  # fmt: skip
        sizes[person] = sum(m.size for m in messages)
        print(f"  {login}: {len(messages)} messages, {len(FOLDERS)} folders, {sizes[person]:,} B")
    return sizes


def migrator(
    *args: str, env: dict[str, str], capture: bool = False
) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "workers.main"]  # the `migrator` command
    return subprocess.run(
        [*command, *args], env=env, text=True, capture_output=capture, check=False
    )


def target_folders(server: DovecotServer, user: str, context: ssl.SSLContext) -> dict[str, int]:
    """Message count of every selectable folder, read back over IMAPS as the master user."""
    counts: dict[str, int] = {}
    with IMAPClient(server.host, server.imaps_port, ssl=True, ssl_context=context) as client:
        client.login(server.master_login(user), MASTER_PASSWORD)
        for flags, _delimiter, name in client.list_folders():
            if b"\\Noselect" not in flags and b"\\NonExistent" not in flags:
                counts[name] = int(client.folder_status(name, [b"MESSAGES"])[b"MESSAGES"])
    return counts


def print_summary(states: dict[str, dict[str, Any]], holdings: dict[str, dict[str, int]]) -> None:
    """One column per target mailbox: its folders as read back over IMAP, then its state."""
    rows: dict[str, list[object]] = {
        name: [holdings[p].get(name, 0) for p in PEOPLE]
        for name in sorted({name for folders in holdings.values() for name in folders})
    }
    rows["total"] = [sum(holdings[p].values()) for p in PEOPLE]
    rows["left behind"] = [states.get(p, {}).get("left_messages", 0) for p in PEOPLE]
    rows["state"] = [states.get(p, {}).get("state", "missing") for p in PEOPLE]
    print(f"{'target folder':<16}" + "".join(f"{p + '@target.test':>20}" for p in PEOPLE))
    for label, values in rows.items():
        print(f"{label:<16}" + "".join(f"{v:>20}" for v in values))


def run_demo(work: Path) -> int:
    tls = make_tls_files(work / "tls")
    context = ssl.create_default_context(cafile=tls.ca_cert)
    with (
        DovecotServer(directory=work / "source", tls=tls) as source,
        DovecotServer(directory=work / "target", tls=tls) as target,
    ):
        source_url = f"imaps://127.0.0.1:{source.imaps_port}"
        target_url = f"imaps://127.0.0.1:{target.imaps_port}"
        print(f"source Dovecot at {source_url}, target Dovecot at {target_url}")
        sizes = fill_sources(source, target, context)

        batch = write_csv(work / "batch.csv", BATCH_COLUMNS, [
            {"SourceIdentity": f"{p}@source.test", "SourceServer": source_url,
             "SourceLoginID": f"{p}@source.test", "SourcePassword": SOURCE_PASSWORD,
             "TargetIdentity": f"{p}@target.test"}
            for p in PEOPLE
        ])  # fmt: skip
        quota = sizes["carol"] // 2
        quotas = write_csv(work / "quotas.csv", QUOTA_COLUMNS, [
            {"Identity": "carol@target.test", "SubscriptionIds": "demo", "UserLocation": "FR",
             "MailboxQuotaSize": str(quota)},
        ])  # fmt: skip
        print(f"  quotas.csv gives carol@target.test {quota:,} B, half her mailbox")
        password_file = work / "target-admin.pw"
        password_file.write_text(MASTER_PASSWORD)
        password_file.chmod(0o600)

        # No MIGRATOR_REDIS_URL: `migrator run` starts its own Redis and in-process workers.
        hidden = ("MIGRATOR_REDIS_URL", "MIGRATOR_SECRET_KEY")
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        env["MIGRATOR_STATE_DIR"] = str(work / "state")
        if not sys.stdout.isatty():
            env.setdefault("COLUMNS", "120")  # rich would squeeze the result table into 80
        options = {
            "--method": "individual",
            "--batch-id": BATCH_ID,
            "--target": "imap",
            "--target-server": target_url,
            "--target-method": "proxyauth",
            "--target-admin": MASTER_USER,
            "--target-admin-password-file": str(password_file),
            "--quotas": str(quotas),
            "--ca-file": str(tls.ca_cert),
        }
        args = ["run", str(batch), *itertools.chain.from_iterable(options.items())]
        print(f"\n$ migrator {' '.join(args)}".replace(f"{work}/", ""), flush=True)
        started = time.monotonic()
        run = migrator(*args, env=env)
        elapsed = time.monotonic() - started
        print(
            f"migrator run exited {run.returncode} after {elapsed:.1f} s"
            " (carol stopped at her quota)\n"
        )

        status = migrator("status", BATCH_ID, "--json", env=env, capture=True)
        if status.returncode != 0:
            print(f"migrator status failed:\n{status.stderr}", file=sys.stderr)
            return 1
        mailboxes = json.loads(status.stdout)["mailboxes"]
        states = {row["target_identity"].split("@")[0]: row for row in mailboxes}
        holdings = {p: target_folders(target, f"{p}@target.test", context) for p in PEOPLE}
    print_summary(states, holdings)
    got = {p: states.get(p, {}).get("state") for p in PEOPLE}
    if got != EXPECTED:
        print(f"\nUNEXPECTED: states {got}, wanted {EXPECTED}", file=sys.stderr)
        return 1
    print("\nAs expected: alice and bob synced; carol quota_stopped within her quota.")
    return 0


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="migrator-demo-"))
    work.chmod(0o755)  # run as root, Dovecot's processes drop privileges and must enter it
    try:
        return run_demo(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""The tools our speed is measured against, run as `../shared/anchors/README.md` shows, and
the limit: each run in bench.copy's process (so its CPU and peak memory are its child's).

    imapsync   the upstream Perl script, one message at a time (FETCH, then APPEND)
    dsync      Dovecot's `doveadm backup` on the target, reading the source over imapc
    migrator   `migrator run`, the whole command, for the same footing
    limit      the target Dovecot importing the source's mail from its own storage
               (`doveadm import`): no network, no IMAP, what no copier over IMAP can beat

Every function copies each pair of `spec["pairs"]` and returns nothing; bench.check then
reads the target to count what arrived.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
IMAPSYNC = REPO.parent / "shared" / "anchors" / "imapsync"
DOVEADM = "/usr/bin/doveadm"


def _run(argv: list[str], what: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {done.returncode}):\n{tail}")


def imapsync(spec: dict[str, Any]) -> None:
    """A fair run: certificates checked, no size pre-scans, no log file."""
    host, port = "127.0.0.1", str(spec["port"])
    for pair in spec["pairs"]:
        _run(
            ["perl", str(IMAPSYNC),
             "--host1", host, "--port1", port, "--ssl1",
             "--user1", pair["source"], "--password1", spec["password"],
             "--host2", host, "--port2", port, "--ssl2",
             "--user2", pair["target"], "--password2", spec["password"],
             "--sslargs1", "SSL_verify_mode=1", "--sslargs1", f"SSL_ca_file={spec['ca_file']}",
             "--sslargs2", "SSL_verify_mode=1", "--sslargs2", f"SSL_ca_file={spec['ca_file']}",
             "--nofoldersizes", "--nofoldersizesatend", "--nolog", "--noreleasecheck"],
            f"imapsync {pair['source']}",
        )  # fmt: skip


def dsync(spec: dict[str, Any]) -> None:
    """`doveadm backup -R` on the target, the source over imapc with 20 messages read ahead."""
    # dsync reads the CA as the mail user: a copy beside the target's config, which it reaches.
    ca_file = Path(spec["conf"]).parent / "bench-ca.pem"
    shutil.copyfile(spec["ca_file"], ca_file)
    ca_file.chmod(0o644)
    for pair in spec["pairs"]:
        _run(
            [DOVEADM, "-c", spec["conf"],
             "-o", "imapc_host=127.0.0.1", "-o", f"imapc_port={spec['port']}",
             "-o", "imapc_ssl=imaps", "-o", f"ssl_client_ca_file={ca_file}",
             "-o", f"imapc_user={pair['source']}", "-o", f"imapc_password={spec['password']}",
             "-o", "imapc_features=rfc822.size fetch-headers", "-o", "mail_prefetch_count=20",
             "backup", "-R", "-u", pair["target"], "imapc:"],
            f"dsync {pair['source']}",
        )  # fmt: skip


def limit(spec: dict[str, Any]) -> None:
    """The target Dovecot importing the source's mail straight from its storage."""
    for pair in spec["pairs"]:
        location = f"sdbox:{spec['homes'][pair['source']]}/mail"
        _run(
            [DOVEADM, "-c", spec["conf"], "import", "-u", pair["target"], location, "", "all"],
            f"doveadm import {pair['source']}",
        )


def migrator(spec: dict[str, Any]) -> None:
    """`migrator run`, the whole command as an operator runs it (its imports, its private
    Redis, its listing), so its fixed cost counts as the other tools' does."""
    with tempfile.TemporaryDirectory(prefix="migrator-bench-run-") as tmp:
        batch = Path(tmp) / "batch.csv"
        batch.write_text(
            "SourceIdentity,SourceServer,SourceLoginID,SourcePassword,TargetIdentity\r\n"
            + "".join(
                f"{p['source']},imaps://127.0.0.1:{spec['port']},{p['source']},"
                f"{spec['password']},{p['target']}\r\n"
                for p in spec["pairs"]
            )
        )
        env = {
            **os.environ,
            "MIGRATOR_TARGET_ADMIN_PASSWORD": spec["admin_password"],
            "MIGRATOR_STATE_DIR": tmp,
        }
        env.pop("MIGRATOR_REDIS_URL", None)
        # As installed: Python's compiled modules kept, not compiled again at every start
        # (bench.empty measures it both ways).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        if spec.get("dont_write_bytecode"):
            env["PYTHONDONTWRITEBYTECODE"] = "1"
        _run(
            # spec["prefix"]: a profiler's command line before ours (py-spy record -o ... --);
            # spec["migrator"]: another build's command (bench.empty --against)
            [*spec.get("prefix", []),
             spec.get("migrator", str(Path(sys.executable).parent / "migrator")), "run", str(batch),
             "--method", "individual", "--target-server", f"imaps://127.0.0.1:{spec['port']}",
             "--target-method", "proxyauth", "--target-admin", spec["admin"],
             "--ca-file", spec["ca_file"], "--connections-per-mailbox", str(spec["connections"]),
             "--batch-id", spec["batch_id"]],
            f"migrator run {spec['batch_id']}",
            env,
        )  # fmt: skip

"""The fixed cost: `migrator run` of an empty mailbox beside dsync's, and `migrator --help`.

Each run is a whole command in its own process (bench.copy, as bench.anchors runs it), the
tools interleaved round by round, medians reported. `migrator` runs twice over: as installed
(Python's compiled modules read from __pycache__) and with PYTHONDONTWRITEBYTECODE=1 as this
machine's environment sets it (still reading the __pycache__ that `make setup` compiled, but
compiling again whatever is missing from it).

    python -m bench.empty [ROUNDS] [--against MIGRATOR]

runs its own Dovecot (`make bench` runs empty_runs()).  --against names another build's
`migrator` command (another worktree's .venv/bin/migrator): it runs in the same rounds,
interleaved with this one's, for an A/B that the machine's other load touches alike.
"""

from __future__ import annotations

import os
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIGRATOR = str(Path(sys.executable).parent / "migrator")

# (label, bench.copy mode, keep PYTHONDONTWRITEBYTECODE)
TOOLS: tuple[tuple[str, str, bool], ...] = (
    ("dsync (imapc)", "dsync", False),
    ("migrator run", "migrator", False),
    ("migrator run, PYTHONDONTWRITEBYTECODE=1", "migrator", True),
)


def help_time(dont_write: bool, migrator: str = MIGRATOR) -> float:
    """Wall seconds of `migrator --help`."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if dont_write:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    started = time.perf_counter()
    subprocess.run([migrator, "--help"], capture_output=True, check=True, env=env)
    return time.perf_counter() - started


def empty_runs(
    rounds: int,
    port: int,
    measure: Callable[[str, dict[str, Any]], dict[str, Any]],
    spec: Callable[..., dict[str, Any]],
    add_user: Callable[[str], None],
    against: str | None = None,
) -> dict[str, list[float]]:
    """{label: wall seconds of each round}: an empty source mailbox copied by each tool into
    a fresh target account, and `migrator --help`; with `against` (another build's
    `migrator`), its runs too, labelled "(against)"."""
    add_user("empty-src@bench.test")
    builds = [("", MIGRATOR)] + ([(" (against)", against)] if against else [])
    walls: dict[str, list[float]] = {}
    for r in range(rounds):
        for label, mode, dont_write in TOOLS:
            for suffix, migrator in builds if mode == "migrator" else [("", MIGRATOR)]:
                side = f"{mode}{'b' if dont_write else ''}{'a' if suffix else ''}{r}"
                add_user(f"empty-{side}@bench.test")
                run = spec(["empty"], side, port=port)
                run["dont_write_bytecode"] = dont_write
                if suffix:
                    run["migrator"] = migrator
                walls.setdefault(label + suffix, []).append(float(measure(mode, run)["wall"]))
        for suffix, migrator in builds:
            for dont_write in (False, True):
                label = "migrator --help" + (", PYTHONDONTWRITEBYTECODE=1" if dont_write else "")
                walls.setdefault(label + suffix, []).append(help_time(dont_write, migrator))
    return walls


def empty_lines(walls: dict[str, list[float]]) -> list[str]:
    """One line per tool: its median, its runs."""
    return [
        f"empty mailbox, {label}: {statistics.median(runs):.2f} s "
        f"(runs {' '.join(f'{w:.2f}' for w in runs)})"
        for label, runs in walls.items()
    ]


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from servers.certs import make_tls_files
    from servers.dovecot import MASTER_PASSWORD, MASTER_USER, DovecotServer
    from servers.redis import RedisServer

    from bench.run import PASSWORD, measure, spec_maker

    words = sys.argv[1:]
    against = None
    if "--against" in words:
        at = words.index("--against")
        against = str(Path(words[at + 1]).absolute())
        del words[at : at + 2]
    rounds = int(words[0]) if words else 5
    with tempfile.TemporaryDirectory(prefix="migrator-bench-") as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 -- Dovecot's unprivileged users must reach it
        tls = make_tls_files(Path(tmp) / "tls")
        ssl.create_default_context(cafile=tls.ca_cert)
        with (
            DovecotServer(master_users={MASTER_USER: MASTER_PASSWORD}, tls=tls) as server,
            RedisServer() as redis_server,
        ):
            walls = empty_runs(
                rounds,
                server.imaps_port,
                measure,
                spec_maker(server, tls, redis_server.url),
                lambda name: server.add_user(name, PASSWORD),
                against,
            )
    for line in empty_lines(walls):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

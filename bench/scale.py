"""`make bench SIZE=N`: one mailbox of N small messages, migrator against dsync, with each
tool's peak memory, the time to its first append and its wall time.

The mailbox is made fast: a Maildir written from tests.servers.mailgen (a fixed seed,
about 2.6 KB a message, 70% in INBOX), then `doveadm import` into the source account,
so a million messages take minutes rather than hours of IMAP APPEND.  Each run copies into
a fresh target account, interleaved (RUNS rounds, each in the other order, medians), and
is checked message by message at the target (bench.check).  The checked targets are
removed only once every run has ended, so a large SIZE needs disk for the source and a copy
per run (10 GB for a million messages and RUNS=2): a run right after a million-file target
was removed took 220-251 s where one with nothing removed before it took 138-166 s, the
settle below notwithstanding (bench/RESULTS.md, stop 27).  Before each run the disk
settles (DISK_SETTLE), past the generator's removed Maildir slices:
ext4 gives no new file an inode freed in the last minute (five, while its inode table block
is not written back), and scans past every such inode for each file it creates; right after
a million files were removed, that made the next tool's target Dovecot spend 90% of its
time in the kernel's `recently_deleted` (perf), and the tool run second 2.5 times slower.

The first append is seen from outside, the same way for both tools: a thread watches the
target account's storage (sdbox: one `u.N` file per message) from the moment the tool's
process is started.
"""

from __future__ import annotations

import os
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from bench.check import digests, verdict
from bench.compare import median_run
from migrator.connectors.imap.listing import LISTING_ITEMS, listing_ranges
from migrator.connectors.imap.wire import uid_fetch

# Folders of the large mailbox and their shares of its messages.
SCALE_FOLDERS = (("INBOX", 70), ("Sent", 15), ("Archive/2019", 8), ("Archive/2020", 7))
SCALE_SEED = 20261204
# Seconds to wait, after a `sync`, before each run: past the kernel's 60 s window in which
# a freed inode is "recently deleted" (fs/ext4/ialloc.c, RECENTCY_MIN).
DISK_SETTLE = 65.0
# (label, bench.copy mode, connections per mailbox for ours)
SCALE_TOOLS: tuple[tuple[str, str, int], ...] = (
    ("dsync (imapc)", "dsync", 0),
    ("migrator, 4 connections", "migrator", 4),
)


def generate(
    server: Any, user: str, count: int, work: Path, make_message: Callable[..., Any]
) -> int:
    """Put `count` generated messages into `user`'s mailbox through a Maildir and
    `doveadm import`; returns their bytes.  Written in slices, so the disk holds the
    Maildir of one slice at a time beside the imported mail."""
    rng = random.Random(SCALE_SEED)
    names = [name for name, _ in SCALE_FOLDERS]
    weights = [share for _, share in SCALE_FOLDERS]
    uid, gid = server.config.identity.mail_uid, server.config.identity.mail_gid
    total = 0
    step = 50_000
    for start in range(0, count, step):
        maildir = work / f"maildir-{start}"
        for name in names:
            sub = maildir if name == "INBOX" else maildir / ("." + name.replace("/", "."))
            for part in ("cur", "new", "tmp"):
                (sub / part).mkdir(parents=True, exist_ok=True)
        for i in range(start, min(count, start + step)):
            folder = rng.choices(names, weights)[0]
            raw, date = make_message(i, folder=folder, size_hint=1300, seed=SCALE_SEED)
            sub = maildir if folder == "INBOX" else maildir / ("." + folder.replace("/", "."))
            path = sub / "cur" / f"{i}.bench:2,S"
            path.write_bytes(raw)
            stamp = date.timestamp()
            os.utime(path, (stamp, stamp))  # Maildir's received date: the file's mtime
            total += len(raw)
        subprocess.run(["chown", "-R", f"{uid}:{gid}", str(maildir)], check=True)
        maildir.chmod(0o755)
        done = server.doveadm(
            "import", "-u", user, f"maildir:{maildir}:LAYOUT=maildir++", "", "all", check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"doveadm import failed: {done.stderr[-2000:]}")
        shutil.rmtree(maildir)
    return total


def warm(port: int, ctx: ssl.SSLContext, user: str, password: str) -> None:
    """Have Dovecot build its caches of the fields both tools list (a first reading
    would otherwise slow whichever run comes first)."""
    with IMAPClient("127.0.0.1", port, ssl_context=ctx, timeout=600) as client:
        client.login(user, password)
        for flags, _delimiter, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            info = client.select_folder(name, readonly=True)
            exists, uidnext = int(info[b"EXISTS"]), int(info.get(b"UIDNEXT", 0))
            for low, high in listing_ranges(exists, uidnext, 20_000) if exists else ():
                uid_fetch(client, f"{low}:{high or '*'}", LISTING_ITEMS)


class FirstAppend:
    """Watches a target account's storage for its first message file (sdbox `u.N`)."""

    def __init__(self, home: Path) -> None:
        self._mailboxes = home / "mail" / "mailboxes"
        self._done = threading.Event()
        self.seconds: float | None = None
        self._start = time.perf_counter()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set():
            if self._found():
                self.seconds = time.perf_counter() - self._start
                return
            self._done.wait(0.05)

    def _found(self) -> bool:
        if not self._mailboxes.is_dir():
            return False
        for folder in self._mailboxes.rglob("dbox-Mails"):
            with os.scandir(folder) as entries:
                if any(e.name.startswith("u.") for e in entries):
                    return True
        return False

    def stop(self) -> float | None:
        self._done.set()
        self._thread.join()
        return self.seconds


def scale(
    count: int,
    rounds: int,
    server: Any,
    ctx: ssl.SSLContext,
    password: str,
    measure: Callable[[str, dict[str, Any]], dict[str, Any]],
    spec: Callable[..., dict[str, Any]],
    make_message: Callable[..., Any],
    say: Callable[[str], None],
) -> dict[str, dict[str, Any]]:
    """{label: median run} of migrator and dsync copying one `count`-message mailbox."""
    name = f"scale{count}"
    server.add_user(f"{name}-src@bench.test", password)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="migrator-scale-", dir=server.mail_dir) as tmp:
        os.chmod(tmp, 0o755)  # noqa: S103 -- the mail user reads the Maildir
        size = generate(server, f"{name}-src@bench.test", count, Path(tmp), make_message)
    say(
        f"generated {count:,} messages ({size / 1e6:.0f} MB) in "
        f"{time.perf_counter() - started:.0f} s (seed {SCALE_SEED})"
    )
    warm(server.imaps_port, ctx, f"{name}-src@bench.test", password)
    source = digests(server.imaps_port, ctx, f"{name}-src@bench.test", password)
    if sum(source.values()) != count:
        raise SystemExit(f"the source holds {sum(source.values()):,} messages, not {count:,}")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label, _, _ in SCALE_TOOLS}
    made: list[Path] = []  # the checked targets, removed once every run has ended
    for r in range(rounds):
        # Each round in the other order, so that no tool is always the one to run on
        # what the other left (the source's caches, the disk's state): a later run was
        # slower in the past, first put down to the source's caches, then found to be the
        # removal of the target before it (bench/RESULTS.md, stop 27).
        order = SCALE_TOOLS if r % 2 == 0 else tuple(reversed(SCALE_TOOLS))
        for label, mode, connections in order:
            side = f"{mode}{connections or ''}-{r}"
            target = f"{name}-{side}@bench.test"
            server.add_user(target, password)
            settle(say)
            watch = FirstAppend(server.home(target))
            run = measure(mode, spec([name], side, connections=connections or 4))
            run["first_append"] = watch.stop()
            problem = verdict(source, digests(server.imaps_port, ctx, target, password))
            if problem:
                raise SystemExit(f"{label}, {count:,} messages, run {r + 1}: {problem}")
            run["messages"], run["bytes"] = count, size
            runs[label].append(run)
            say(
                f"  {label}: {run['wall']:.1f} s, first append "
                f"{_seconds(run['first_append'])}, peak {run['peak_mb']:.0f} MB"
            )
            made.append(server.home(target))
    for home in made:  # after every run (see the docstring)
        shutil.rmtree(home, ignore_errors=True)
    return {label: median_run(found) for label, found in runs.items()}


def settle(say: Callable[[str], None]) -> None:
    """Written back, and past the window in which files removed before (a checked target,
    the generator's Maildir) slow every file created: each run starts on the same disk."""
    os.sync()
    say(f"  letting the disk settle for {DISK_SETTLE:.0f} s (freed inodes, see the docstring)")
    time.sleep(DISK_SETTLE)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def scale_lines(count: int, results: dict[str, dict[str, Any]]) -> list[str]:
    """The scale runs as lines: each tool's median, and migrator against dsync."""
    lines = []
    for label, r in results.items():
        lines.append(
            f"{count:,} messages, {label}: {r['median_wall']:.1f} s "
            f"(runs {' '.join(f'{w:.1f}' for w in r['walls'])}), first append "
            f"{_seconds(r.get('first_append'))}, peak {r['peak_mb']:.0f} MB, CPU {r['cpu']:.1f} s"
        )
    ours, theirs = results["migrator, 4 connections"], results["dsync (imapc)"]
    ratio = ours["median_wall"] / theirs["median_wall"]
    lines.append(
        f"{count:,} messages: migrator's wall time {ratio:.2f}x "
        f"dsync's (goal: 1.25x or less), peak {ours['peak_mb']:.0f} MB (goal: under 400 MB)"
    )
    return lines


if __name__ == "__main__":  # pragma: no cover - run through bench.run
    sys.exit("run `make bench SIZE=N`")

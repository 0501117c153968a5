"""A real Celery worker (`celery -A workers worker`) as a process of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class Worker:
    """The worker in its own process group, so SIGKILL takes all of it (pool included)."""

    def __init__(
        self,
        env: dict[str, str],
        log: Path,
        loglevel: str = "INFO",
        concurrency: int = 1,
        options: Sequence[str] = (),
    ) -> None:
        self.log = log
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "--loglevel", loglevel,
             "--concurrency", str(concurrency), "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"w{time.time_ns()}@%h", *options],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        """What the worker (its main process and its pool) has logged so far."""
        self._log.flush()
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class Workers(list[Worker]):
    """The workers one test started, in order; they share an environment and a folder for
    their logs, and are stopped when the test ends (the `workers` fixture)."""

    def __init__(self, env: dict[str, str], directory: Path) -> None:
        super().__init__()
        self.env = env
        self.directory = directory

    def start(
        self,
        name: str = "worker",
        *,
        env: dict[str, str] | None = None,
        loglevel: str = "INFO",
        concurrency: int = 1,
        options: Sequence[str] = (),
    ) -> Worker:
        """A new worker, logging to `name`.log, with the shared environment or `env`;
        `options`: more of the worker's command line (`-E`)."""
        worker = Worker(
            env or self.env, self.directory / f"{name}.log", loglevel, concurrency, options
        )
        self.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self:
            worker.stop()

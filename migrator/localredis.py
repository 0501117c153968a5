"""The private Redis of `migrator run` when no MIGRATOR_REDIS_URL is set.

It lives under the state directory with an append-only file, so `migrator
resume` and `migrator status` find the batch again after the run ends or dies.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from migrator.errors import ConfigError

STATE_DIR_ENV = "MIGRATOR_STATE_DIR"


def state_dir() -> Path:
    default = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "migrator"
    path = Path(os.environ.get(STATE_DIR_ENV) or default)
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.directory = directory / "redis"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "redis-server is not installed: run `make setup`, or set MIGRATOR_REDIS_URL"
            )
        self.port = _free_port()
        self._process = subprocess.Popen(
            [
                binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--save", "",
                "--logfile", str(self.directory / "redis.log"),
                "--protected-mode", "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                pass
            except redis.BusyLoadingError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise ConfigError(
                    f"the private redis-server did not start; see {self.directory / 'redis.log'}"
                )
            time.sleep(0.05)
        client.close()
        return self

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> PrivateRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

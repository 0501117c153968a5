"""A private redis-server on a free loopback port, for tests that need a real Redis."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import redis

from .ports import LOOPBACK, free_port
from .process import ServerProcess

REDIS_SERVER = "redis-server"


class RedisServer(ServerProcess):
    """redis-server bound to 127.0.0.1 with persistence off, its files in one directory.

    Use as a context manager, or call start() and stop(). ``restart()`` brings it back on the same
    port, for tests of how workers ride out a Redis outage.
    """

    log_files = ("redis.stdout", "redis.log")

    def __init__(self, directory: Path | None = None, *, port: int | None = None) -> None:
        super().__init__(directory, prefix="migrator-redis-")
        self.port = port if port is not None else free_port()
        self.log_path = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def client(self) -> redis.Redis:
        """A new redis-py client for database 0; the caller closes it."""
        return redis.Redis(host=LOOPBACK, port=self.port, db=0, socket_timeout=5)

    def start(self, *, timeout: float = 10.0) -> RedisServer:
        if self._process is not None:
            raise RuntimeError("redis-server is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        executable = shutil.which(REDIS_SERVER) or "/usr/bin/redis-server"
        args = [
            executable,
            "--port", str(self.port),
            "--bind", LOOPBACK,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
        ]  # fmt: skip
        return self._spawn(args, "redis.stdout", timeout)

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited with {self._process.returncode}: {self.log_text()}"
                )
            try:
                with self.client() as client:
                    if client.ping():
                        return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server did not answer PING: {self.log_text()}")
            time.sleep(0.02)

    def stop(self, *, timeout: float = 5.0) -> None:
        """Terminate the server and wait for it; kill it if it does not go in *timeout* s."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self, *, keep_data: bool = False) -> None:
        """Stop and start again on the same port.

        With ``keep_data`` the dataset is saved first and loaded again, like a graceful restart;
        without it the server comes back empty, like a crash with persistence off.
        """
        if keep_data and self.running and self._process is not None:
            # SHUTDOWN SAVE saves and exits in one step, as a graceful restart does: a SAVE
            # then a stop would lose whatever clients wrote in between.
            with self.client() as client, contextlib.suppress(redis.ConnectionError):
                client.shutdown(save=True)
            self._process.wait(timeout=10)
        self.stop()
        if not keep_data:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        self.start()

    def dump_rdb(self) -> bytes:
        """The server's dataset as RDB bytes: an explicit SAVE, then the dump file.

        ``--save ""`` only turns off the automatic snapshots; SAVE still writes dump.rdb.
        """
        with self.client() as client:
            client.save()
        return (self.dir / "dump.rdb").read_bytes()

"""The private redis-server of `migrator run`, used when MIGRATOR_REDIS_URL is not set.

It lives under the state directory with an append-only file, so
`migrator resume` and `migrator status` find the batch again after the run ends or
dies.  There is one per state directory, shared by every command that runs there at
the same time (a second `run` or `resume` of a batch, a `status` during a run): a
second redis-server on the same files would hold its own copy of the mailbox locks,
and two commands would copy one mailbox side by side.

Files under STATE/redis (directories 0700, files 0600; redis-server runs with umask
077):

    start.lock     flock held exclusively while a command starts, joins or stops it
    users.lock     flock held shared by every command using it, for as long as it does
    server.json    port, pid and run_id of the running server
    appendonlydir/ redis.log redis.pid   redis-server's own

A command takes start.lock, then users.lock shared, and joins the server that
server.json names if it answers with that run_id, else starts one.  Leaving, it
takes start.lock again and tries users.lock exclusively: only the last user gets
it, and that one shuts the server down.  flock locks die with their process, so a
command killed at any point never blocks another: the server it leaves running is
joined by the next command, and stopped by whoever leaves last.  The server
daemonizes (a session of its own, no command's child), so the terminal's Ctrl-C
never reaches it: it lives until the command that caught the Ctrl-C has checkpointed
what was in flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

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


# How long a command waits for another to finish starting or stopping the server.
START_LOCK_WAIT = 90.0
SERVER_START_WAIT = 20.0
SERVER_STOP_WAIT = 30.0


def tighten(directory: Path) -> None:
    """Directories 0700 and files 0600 from `directory` down: what earlier versions left
    (redis-server's append-only files and log were 0644).  Symbolic links are left alone."""
    for root, dirs, files in os.walk(directory):
        for name, mode in [(d, 0o700) for d in dirs] + [(f, 0o600) for f in files]:
            path = os.path.join(root, name)
            with contextlib.suppress(OSError):
                if not os.path.islink(path):
                    os.chmod(path, mode)
    with contextlib.suppress(OSError):
        os.chmod(directory, 0o700)


def _open_lock(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


@contextlib.contextmanager
def _exclusive(path: Path, wait: float) -> Iterator[None]:
    fd = _open_lock(path)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ConfigError(
                        f"another migrator command has been starting or stopping the private "
                        f"redis-server for {wait:.0f} s ({path}); try again"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def _client(port: int, timeout: float) -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def _pid_alive(pid: int, directory: Path) -> bool:
    """Whether `pid` is a redis-server (not a zombie) working in `directory` (its current
    directory: redis-server changes to its --dir, and rewrites its command line)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return False
    name, _, rest = stat.partition(" (")[2].rpartition(")")
    return (
        name == "redis-server"
        and rest.split()[0] not in ("Z", "X")
        and (os.path.realpath(cwd) == os.path.realpath(directory))
    )


class PrivateRedis:
    """The state directory's redis-server, started or joined; use as a context manager."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "redis"
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.port = 0
        self._users: int | None = None  # users.lock, held shared while we use the server
        self._starter: threading.Thread | None = None  # begin()'s
        self._start_error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def _server_file(self) -> Path:
        return self.directory / "server.json"

    def start(self) -> PrivateRedis:
        tighten(self.directory)
        with _exclusive(self.directory / "start.lock", START_LOCK_WAIT):
            users = _open_lock(self.directory / "users.lock")
            try:
                fcntl.flock(users, fcntl.LOCK_SH)  # never waits: leaving needs start.lock
                self.port = self._running() or self._spawn()
            except BaseException:
                os.close(users)
                raise
            self._users = users
        return self

    def begin(self) -> PrivateRedis:
        """start() in a thread of its own, for a command that has other things to do
        meanwhile (its arguments, its batch file); entering the context waits for it, and
        raises what start() raised.  Whatever happens meanwhile, call stop() (or leave the
        context) in the end: a server started for nothing is stopped again."""
        if self._starter is None:
            # What starting imports on first use (redis-py reads its version's metadata,
            # the socket encodes the host name), imported here, so that no module is
            # imported by two threads at once while the command goes on with its own.
            import email.parser  # noqa: F401
            import encodings.idna  # noqa: F401

            def starting() -> None:
                try:
                    self.start()
                except BaseException as exc:  # for __enter__ to raise in the command's thread
                    self._start_error = exc

            self._starter = threading.Thread(target=starting, name="private-redis")
            self._starter.start()
        return self

    def _started(self) -> PrivateRedis:
        """begin()'s start, once it is done (ConfigError and the like, as start() raises)."""
        starter, self._starter = self._starter, None
        if starter is not None:
            starter.join()
        error, self._start_error = self._start_error, None
        if error is not None:
            raise error
        return self

    def stop(self) -> None:
        """Leave; the last command to leave shuts the server down (its data on disk)."""
        if self._starter is not None:
            with contextlib.suppress(Exception):
                self._started()
        users, self._users = self._users, None
        if users is None:
            return
        try:
            with _exclusive(self.directory / "start.lock", START_LOCK_WAIT):
                try:
                    # Only the last user gets this: any other holds users.lock shared.
                    fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass
                else:
                    self._shutdown()
                finally:
                    # Released before start.lock, so a command that starts next never
                    # waits for users.lock.
                    os.close(users)
                    users = None
        finally:
            if users is not None:  # start.lock was not had: just leave
                os.close(users)

    def _running(self) -> int | None:
        """The port of the server server.json names, if it is up; None if there is none.
        A server that is there but does not answer is not replaced: two on the same
        append-only files would ruin them."""
        try:
            info = json.loads(self._server_file.read_text(encoding="utf-8"))
            port, pid, run_id = int(info["port"]), int(info["pid"]), str(info["run_id"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        deadline = time.monotonic() + SERVER_START_WAIT
        while True:
            client = _client(port, 2.0)
            try:
                if str(client.info("server").get("run_id")) == run_id:
                    return port
                break  # another server took the port: ours is gone
            except redis.BusyLoadingError:
                pass  # ours, still reading its files
            except redis.RedisError:
                break
            finally:
                client.close()
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if _pid_alive(pid, self.directory):
            raise ConfigError(
                f"the private redis-server (pid {pid}) runs but does not answer on port {port}; "
                f"stop it, then try again (its log: {self.directory / 'redis.log'})"
            )
        self._server_file.unlink(missing_ok=True)
        return None

    def _spawn(self) -> int:
        binary = shutil.which("redis-server")
        if binary is None:
            raise ConfigError(
                "redis-server is not installed: run `make setup`, or set MIGRATOR_REDIS_URL"
            )
        log = self.directory / "redis.log"
        pidfile = self.directory / "redis.pid"
        for _attempt in range(3):  # a port taken between _free_port() and the bind
            port = _free_port()
            pidfile.unlink(missing_ok=True)
            logged = log.stat().st_size if log.exists() else 0
            # It daemonizes: the process we start forks the server and exits, so the
            # server is no child of this command (nothing to reap, whoever stops it), in
            # a session of its own (the terminal's Ctrl-C goes to the command, not to it).
            subprocess.run(
                [
                    binary,
                    "--daemonize", "yes",
                    "--pidfile", str(pidfile),
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.directory),
                    "--appendonly", "yes",
                    "--save", "",
                    "--logfile", str(log),
                    "--protected-mode", "yes",
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # Its append-only files, pid file and log hold the batches: this user's only.
                umask=0o077,
                check=False,
                timeout=SERVER_START_WAIT,
            )  # fmt: skip
            up = self._wait_until_up(port, pidfile)
            if up is not None:
                pid, run_id = up
                data = json.dumps({"port": port, "pid": pid, "run_id": run_id})
                temporary = self.directory / "server.json.new"
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(data)
                temporary.replace(self._server_file)
                return port
            with log.open("rb") as handle:
                handle.seek(logged)
                if b"Address already in use" not in handle.read():
                    break
        raise ConfigError(f"the private redis-server did not start; see {log}")

    def _wait_until_up(self, port: int, pidfile: Path) -> tuple[int, str] | None:
        """(pid, run_id) once it answers; None if it exited first (or never wrote its pid
        file, which it does once it listens)."""
        deadline = time.monotonic() + SERVER_START_WAIT
        while time.monotonic() < deadline:
            try:
                pid: int | None = int(pidfile.read_text())
            except (OSError, ValueError):
                pid = None
            if pid is not None:
                client = _client(port, 2.0)
                try:
                    info = client.info("server")
                    return int(info["process_id"]), str(info["run_id"])
                except (redis.ConnectionError, redis.BusyLoadingError, redis.TimeoutError):
                    pass  # reading its append-only files
                finally:
                    client.close()
                if not _pid_alive(pid, self.directory):
                    return None
            time.sleep(0.005)  # it is up within a few ms: every `migrator run` waits here
        return None

    def _shutdown(self) -> None:
        """SHUTDOWN (the append-only file written and synced), then wait until it is gone."""
        client = _client(self.port, SERVER_STOP_WAIT)
        try:
            client.shutdown()  # returns when the connection closes: the server has exited
        except redis.RedisError:
            pass  # gone already, or refused: the pid check below decides
        finally:
            client.close()
        pid = self._server_pid()
        deadline = time.monotonic() + SERVER_STOP_WAIT
        while pid is not None and _pid_alive(pid, self.directory):
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                break
            time.sleep(0.02)
        self._server_file.unlink(missing_ok=True)

    def _server_pid(self) -> int | None:
        try:
            return int(json.loads(self._server_file.read_text(encoding="utf-8"))["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def __enter__(self) -> PrivateRedis:
        if self._starter is not None:
            return self._started()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The private redis-server of a state directory: one per directory, joined by every
command that runs there, stopped by the last one to leave, never blocked by a command
that was killed, and its files for this user only.

Commands are played by this process (PrivateRedis objects) and by child processes that
hold a PrivateRedis until told to leave, or are killed.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from migrator.errors import ConfigError
from migrator.localredis import PrivateRedis

REPO = Path(__file__).resolve().parent.parent

_USER = """
import sys
from pathlib import Path
from migrator.errors import ConfigError
from migrator.localredis import PrivateRedis
private = PrivateRedis(Path(sys.argv[1])).start()
print(private.port, flush=True)
sys.stdin.read()  # until told to leave
private.stop()
"""


class User:
    """A process that uses the state directory's private Redis until told to leave."""

    def __init__(self, state: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _USER, str(state)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        self.port = int(self.process.stdout.readline())

    def leave(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        assert self.process.wait(timeout=60) == 0
        self._close()

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


def _server(state: Path) -> dict[str, int | str]:
    data: dict[str, int | str] = json.loads((state / "redis" / "server.json").read_text())
    return data


def _answers(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=2, socket_connect_timeout=2)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return status.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    yield path
    server = path / "redis" / "server.json"
    if server.exists():  # a test that failed half-way: leave no redis-server behind
        pid = int(json.loads(server.read_text())["pid"])
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)
        pytest.fail("a private redis-server outlived its users")


def test_a_second_command_joins_the_server_and_the_last_to_leave_stops_it(state: Path) -> None:
    first = PrivateRedis(state).start()
    other = User(state)
    third = PrivateRedis(state).start()

    assert first.port == other.port == third.port
    pid = int(_server(state)["pid"])
    redis.Redis(port=first.port).set("k", "v")
    first.stop()
    other.leave()
    assert _answers(third.port)  # one user left
    third.stop()

    assert not _answers(third.port)
    assert _gone(pid)
    assert not (state / "redis" / "server.json").exists()


def test_what_it_holds_is_on_disk_for_the_next_command(state: Path) -> None:
    with PrivateRedis(state) as private:
        redis.Redis(port=private.port).set("batch", "b1")
    with PrivateRedis(state) as private:
        assert redis.Redis(port=private.port).get("batch") == b"b1"


def test_a_killed_command_never_blocks_the_next_and_its_server_is_joined(state: Path) -> None:
    owner = User(state)  # started the server
    run_id = _server(state)["run_id"]
    owner.kill()  # dies holding its locks: the kernel drops them

    started = time.monotonic()
    with PrivateRedis(state) as private:
        assert time.monotonic() - started < 5
        assert private.port == owner.port
        assert _server(state)["run_id"] == run_id  # the same server, not a second one
    assert not _answers(owner.port)  # the last one out stopped it


def test_a_server_that_died_is_replaced(state: Path) -> None:
    owner = User(state)
    pid = int(_server(state)["pid"])
    os.kill(pid, signal.SIGKILL)
    owner.kill()

    with PrivateRedis(state) as private:
        assert int(_server(state)["pid"]) != pid
        assert _answers(private.port)


def test_the_server_is_out_of_reach_of_the_terminals_ctrl_c(state: Path) -> None:
    with PrivateRedis(state):
        pid = int(_server(state)["pid"])
        assert os.getsid(pid) == pid  # a session of its own, so no process group of ours
        assert os.getsid(pid) != os.getsid(0)


def test_files_left_0644_by_earlier_versions_are_made_private(state: Path) -> None:
    with PrivateRedis(state) as private:
        redis.Redis(port=private.port).set("k", "v")
    # As an earlier version left them: redis-server ran with the usual umask 022.
    for path in [state / "redis", *(state / "redis").rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)

    with PrivateRedis(state) as private:
        assert redis.Redis(port=private.port).get("k") == b"v"

    paths = [state / "redis", *(state / "redis").rglob("*")]
    assert any(p.suffix == ".aof" for p in paths) and any(p.name == "redis.log" for p in paths)
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), f"{path}: {oct(mode)}"


def test_a_server_begun_in_the_background_is_the_one_the_command_then_enters(
    state: Path,
) -> None:
    private = PrivateRedis(state).begin()  # what `migrator run` does before reading its batch
    with private:
        assert _answers(private.port)
        pid = int(_server(state)["pid"])
    assert not _answers(private.port)
    assert _gone(pid)


def test_a_server_begun_for_a_command_that_then_fails_is_stopped(state: Path) -> None:
    private = PrivateRedis(state).begin()
    private.stop()  # the command failed before entering it: a bad batch file, say
    assert not (state / "redis" / "server.json").exists()


def test_a_server_that_cannot_start_in_the_background_says_so_when_entered(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(state))  # no redis-server to be found
    private = PrivateRedis(state).begin()
    with pytest.raises(ConfigError, match="redis-server is not installed"), private:
        pass

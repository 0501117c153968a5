"""The fault suite's bookkeeping: every scenario reports how many messages it compared
between source and target and how many were lost or duplicated, and the terminal summary
adds them up. After each test, neither Redis nor the captured log holds a batch password,
an OAuth client secret or any token the test OAuth server issued (as it is, or
base64-encoded); after the session, no log or Redis data file under pytest's temporary
directories does either.

The fixtures the scenarios share: exactly_once, mailbox_pairs, and copy_mailbox and the
worker lock TTL made short (faults come from the test, not from a slow server)."""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections.abc import Iterator

import pytest
import redis
from faultkit import LATE_COMMIT_GRACE, OUTCOMES, ExactlyOnce, FaultReport, MailboxPairs, leaks
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.oauth_server import ISSUED_SECRETS, TOKEN_PATTERN
from servers.redis import RedisServer
from support import BATCH_PASSWORDS, CopyMailbox, batch_password


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    return FaultReport(request.node.nodeid.split("::", 1)[-1])


@pytest.fixture
def exactly_once(
    fault_report: FaultReport, dovecot: DovecotServer, ssl_context: ssl.SSLContext
) -> ExactlyOnce:
    return ExactlyOnce(fault_report, dovecot, ssl_context)


@pytest.fixture
def mailbox_pairs(make_user: MakeUser, fill: Fill) -> MailboxPairs:
    """``mailbox_pairs(tag, folders, count=1, *, size_hint=2000)``: `count` (source,
    password, target) triples of fresh test Dovecot users, each source with its own batch
    password and `folders` of generated mail (seeded by its number), each target empty."""

    def make(
        tag: str, folders: dict[str, int], count: int = 1, *, size_hint: int = 2000
    ) -> list[tuple[str, str, str]]:
        pairs = []
        for n in range(count):
            password = batch_password(f"{tag}-{n}")
            source, target = make_user(password), make_user()
            fill(source, folders, password, size_hint=size_hint, seed=n)
            pairs.append((source, password, target))
        return pairs

    return make


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not OUTCOMES:
        return
    scenarios = len({o.scenario for o in OUTCOMES})
    checked = sum(o.checked for o in OUTCOMES)
    lost = sum(o.lost for o in OUTCOMES)
    duplicated = sum(o.duplicated for o in OUTCOMES)
    terminalreporter.write_line(
        f"fault suite: {scenarios} scenarios, {checked:,} messages checked, "
        f"{lost} lost, {duplicated} duplicated"
    )


def _redis_text(server: RedisServer) -> bytes:
    """Every key and value in Redis (strings, hashes, lists, sets, sorted sets), as stored:
    bytes, so a password in another encoding than UTF-8 is found too."""
    client = redis.Redis(host="127.0.0.1", port=server.port, decode_responses=False)
    parts: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            parts.append(key)
            kind = client.type(key)
            if kind == b"string":
                parts.append(client.get(key) or b"")
            elif kind == b"hash":
                for field, value in client.hgetall(key).items():
                    parts.extend((field, value))
            elif kind == b"list":
                parts.extend(client.lrange(key, 0, -1))
            elif kind == b"set":
                parts.extend(client.smembers(key))
            elif kind == b"zset":
                parts.extend(client.zrange(key, 0, -1))
    finally:
        client.close()
    return b"\n".join(parts)


@pytest.fixture(autouse=True)
def _no_password_in_redis_or_captured_logs(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    # Each test starts from an empty Redis (the redis_url fixture), so checking at the end
    # of each one covers everything any fault test ever stored.
    yield
    # In teardown caplog.text holds teardown's records only: read what the test logged.
    formatter = logging.Formatter("%(levelname)s %(name)s %(message)s")
    logged = "\n".join(
        formatter.format(record)
        for when in ("setup", "call")
        for record in caplog.get_records(when)
    )
    secrets = [*BATCH_PASSWORDS, *ISSUED_SECRETS]
    leaked_logs = [p for p in secrets if leaks(logged, p)]
    assert not leaked_logs, "a batch password, client secret or token reached the captured log"
    if not redis_server.running:
        return
    text = _redis_text(redis_server)
    dump = redis_server.dump_rdb()
    leaked = [p for p in secrets if leaks(text, p) or leaks(dump, p)]
    assert not leaked, f"{len(leaked)} batch passwords, client secrets or tokens are in Redis"


# What the suite's processes write: logs, and the data files of the private redis-server that
# `migrator run` starts (append-only file and snapshot) with the batch copies beside them.
_WRITTEN = {".log", ".out", ".err", ".txt", ".aof", ".rdb", ".json"}


@pytest.fixture(scope="session", autouse=True)
def _no_password_in_any_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    base = tmp_path_factory.getbasetemp()
    leaked = []
    for path in base.rglob("*"):
        if path.suffix not in _WRITTEN or not path.is_file():
            continue
        with contextlib.suppress(OSError):
            data = path.read_bytes()
            leaked += [str(path) for p in BATCH_PASSWORDS if leaks(data, p)]
            leaked += [str(path) for p in _client_secrets() if leaks(data, p)]
            # Tokens are many (one every 20 s of OAuth copying): found by their shape.
            tokens = {m.decode() for m in TOKEN_PATTERN.findall(data)}
            leaked += [str(path) for _ in tokens & ISSUED_SECRETS]
    assert not leaked, f"secrets in logs or data files: {sorted(set(leaked))}"


def _client_secrets() -> list[str]:
    return [s for s in ISSUED_SECRETS if not TOKEN_PATTERN.fullmatch(s.encode())]


@pytest.fixture
def copy_mailbox(dovecot: DovecotServer, tls_files: TlsFiles, redis_url: str) -> CopyMailbox:
    """As everywhere (support.CopyMailbox), with the fault suite's short late-commit grace."""
    return CopyMailbox(dovecot, tls_files.ca_cert, redis_url, late_commit_grace=LATE_COMMIT_GRACE)


@pytest.fixture
def lock_ttl() -> float:
    """Shorter than elsewhere: a resumed task takes over a killed worker's mailbox quickly."""
    return 1.5

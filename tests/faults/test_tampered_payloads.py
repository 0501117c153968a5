"""Someone who can write to Redis but lacks MIGRATOR_SECRET_KEY changes a queued job: its
server, its TLS options or its login. Each sealed password is bound to what it was sealed for,
so the changed job fails as tampered before a worker connects anywhere, and no password
leaves, in clear or otherwise; enqueued again, the batch copies each message once.

The attacker's server is a listening socket of the test's own that plays IMAP (AUTH=PLAIN,
no STARTTLS, over TLS where asked) and keeps every byte it receives."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celerykit import wait_for
from faultkit import ExactlyOnce, enqueue, leaks
from servers.celery_worker import Workers
from servers.certs import TlsFiles, make_tls_files
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from support import BATCH_PASSWORDS, batch_password, imaps

from migrator.report import MailboxState
from migrator.state import StateStore

_LITERAL = re.compile(rb"\{(\d+)\+?\}\r\n$")


class HostileImap:
    """A server of the attacker's: counts connections, keeps what it is sent, refuses every
    login (after reading it), and never offers STARTTLS."""

    def __init__(self, tls: ssl.SSLContext | None = None, ca_file: str | None = None) -> None:
        self._tls = tls
        self.ca_file = ca_file  # the CA that signed its certificate, if it has one
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self.received = bytearray()
        self._sockets: list[socket.socket] = [self._listener]
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                with self._lock:
                    self.connections += 1
                    self._sockets.append(conn)
                threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            if self._tls is not None:
                conn = self._tls.wrap_socket(conn, server_side=True)
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile server ready\r\n")
            lines = conn.makefile("rb")
            authenticating: bytes | None = None
            while line := lines.readline():
                self._keep(line)
                while literal := _LITERAL.search(line):  # read a literal whole, then go on
                    if not line.endswith(b"+}\r\n"):
                        conn.sendall(b"+ go ahead\r\n")
                    self._keep(lines.read(int(literal[1])))
                    line = lines.readline()
                    self._keep(line)
                if authenticating is not None:  # the SASL response
                    conn.sendall(authenticating + b" NO [AUTHENTICATIONFAILED] no\r\n")
                    authenticating = None
                    continue
                tag, _, rest = line.partition(b" ")
                command = rest.split(b" ", 1)[0].strip().upper()
                if command == b"AUTHENTICATE":
                    conn.sendall(b"+ \r\n")
                    authenticating = tag
                elif command == b"CAPABILITY":
                    conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")
                elif command == b"LOGOUT":
                    conn.sendall(b"* BYE\r\n" + tag + b" OK bye\r\n")
                    return
                else:
                    conn.sendall(tag + b" NO [AUTHENTICATIONFAILED] no\r\n")

    def _keep(self, data: bytes) -> None:
        with self._lock:
            self.received += data

    def close(self) -> None:
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()


def _server_context(files: TlsFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(files.server_cert, files.server_key)
    return context


@pytest.fixture
def hostile(tls_files: TlsFiles, tmp_path: Path) -> Iterator[dict[str, HostileImap]]:
    """The attacker's servers: in clear; over TLS with a certificate the batch trusts (the
    test CA); over TLS with one of the attacker's own CA."""
    own = make_tls_files(tmp_path / "attacker-tls")
    servers = {
        "plain": HostileImap(),
        "tls": HostileImap(_server_context(tls_files)),
        "own-ca": HostileImap(_server_context(own), str(own.ca_cert)),
    }
    yield servers
    for server in servers.values():
        server.close()


Change = Callable[[dict[str, Any], dict[str, HostileImap], str], str]


def _to(server: HostileImap, tls: str) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": server.port, "tls": tls, "protocol": "imap"}


def _source_in_clear(p: dict[str, Any], h: dict[str, HostileImap], other: str) -> str:
    p["source"]["server"] = _to(h["plain"], "starttls")
    p["options"]["allow_plaintext"] = True
    return "plain"


def _source_over_tls(p: dict[str, Any], h: dict[str, HostileImap], other: str) -> str:
    p["source"]["server"] = _to(h["tls"], "implicit")  # its certificate passes the checks
    return "tls"


def _source_insecure(p: dict[str, Any], h: dict[str, HostileImap], other: str) -> str:
    p["source"]["server"] = _to(h["own-ca"], "implicit")
    p["options"]["insecure"] = True
    return "own-ca"


def _source_ca_file(p: dict[str, Any], h: dict[str, HostileImap], other: str) -> str:
    p["source"]["server"] = _to(h["own-ca"], "implicit")
    p["options"]["ca_file"] = h["own-ca"].ca_file
    return "own-ca"


def _source_login(p: dict[str, Any], h: dict[str, HostileImap], other: str) -> str:
    p["source"]["credentials"]["login"] = other  # the password tried on another account
    return "plain"


def _target_over_tls(p: dict[str, Any], h: dict[str, HostileImap], other: str) -> str:
    p["target"]["server"] = _to(h["tls"], "implicit")  # the admin's password, every mailbox
    return "tls"


def _target_authzid(p: dict[str, Any], h: dict[str, HostileImap], other: str) -> str:
    p["target"]["credentials"]["authzid"] = other  # the admin acting for another mailbox
    return "plain"


@pytest.mark.parametrize(
    "change",
    [_source_in_clear, _source_over_tls, _source_insecure, _source_ca_file, _source_login,
     _target_over_tls, _target_authzid],
    ids=lambda change: change.__name__.lstrip("_").replace("_", "-"),
)  # fmt: skip
def test_a_queued_job_changed_in_redis_fails_as_tampered_and_sends_no_password(
    change: Change,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    workers: Workers,
    hostile: dict[str, HostileImap],
    tmp_path: Path,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("tampered")
    source, target, other = make_user(password), make_user(), make_user()
    fill(source, {"INBOX": 20, "Archive": 10}, password, size_hint=2_000)
    url = imaps(dovecot)
    batch_id = enqueue(tmp_path, url, url, tls_files.ca_cert, [(source, password, target)])
    client = redis.Redis.from_url(celery_env["MIGRATOR_REDIS_URL"])
    (key,) = client.keys(f"migrator:job:{batch_id}:*")
    payload = json.loads(client.get(key) or b"")
    attacker = hostile[change(payload, hostile, other)]
    client.set(key, json.dumps(payload))
    client.close()

    workers.start()
    store = StateStore.from_url(celery_env["MIGRATOR_REDIS_URL"])
    (row,) = wait_for(store, batch_id)

    assert row.state is MailboxState.FAILED, row
    assert "changed after it was enqueued" in row.last_error, row
    assert source in row.last_error or target in row.last_error, row
    assert row.done_messages == 0
    assert attacker.connections == 0, "a worker connected to the attacker's server"
    assert not [p for p in BATCH_PASSWORDS if leaks(bytes(attacker.received), p)]
    # What the message says to do: enqueue the batch again. Each message lands once.
    again = enqueue(tmp_path, url, url, tls_files.ca_cert, [(source, password, target)])
    (row,) = wait_for(store, again)
    assert row.state is MailboxState.SYNCED, row
    exactly_once.copied(source, password, target)

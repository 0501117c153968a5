"""The test servers behave as the rest of the suite assumes: these facts are its foundation."""

from __future__ import annotations

import math
import poplib
import socket
import ssl
from pathlib import Path

import pytest
import redis
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from servers.certs import TlsFiles, make_tls_files
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    OVERQUOTA_TEXT,
    SPECIAL_USE_FOLDERS,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import LABEL, make_message, message_flags, populate
from servers.redis import RedisServer


def imaps(server: DovecotServer, ssl_context: ssl.SSLContext) -> IMAPClient:
    return IMAPClient(server.host, server.imaps_port, ssl_context=ssl_context, timeout=10)


def test_imap_port_offers_starttls_and_verifies_against_the_test_ca(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user()
    with IMAPClient(dovecot.host, dovecot.imap_port, ssl=False, timeout=10) as client:
        assert b"STARTTLS" in client.capabilities()
        client.starttls(ssl_context)
        assert client.login(user, DEFAULT_USER_PASSWORD) == b"Logged in"
        capabilities = client.capabilities()
    for needed in (b"LITERAL+", b"MULTIAPPEND", b"SPECIAL-USE", b"QUOTA"):
        assert needed in capabilities


def test_certificate_is_refused_by_a_client_trusting_another_ca(
    dovecot: DovecotServer, tmp_path: Path
) -> None:
    # Not the system store: CI may point SSL_CERT_FILE at the test CA.
    other_ca = make_tls_files(tmp_path).ca_cert
    with pytest.raises(ssl.SSLCertVerificationError):
        imaps(dovecot, ssl.create_default_context(cafile=other_ca))


def test_imaps_login(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user("another-Pw2")
    with imaps(dovecot, ssl_context) as client:
        assert client.login(user, "another-Pw2") == b"Logged in"
    with imaps(dovecot, ssl_context) as client, pytest.raises(LoginError):
        client.login(user, "wrong password")


def test_master_user_logs_in_as_user_with_star_separator(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user()
    with imaps(dovecot, ssl_context) as client:
        client.login(f"{user}*{MASTER_USER}", MASTER_PASSWORD)
        client.select_folder("INBOX")
        client.append("INBOX", b"Subject: via master\r\n\r\nbody\r\n")
    with imaps(dovecot, ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        assert client.select_folder("INBOX")[b"EXISTS"] == 1


def test_master_user_logs_in_as_user_with_slash_separator(
    dovecot_slash: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user(server=dovecot_slash)
    assert dovecot_slash.master_login(user) == f"{user}/{MASTER_USER}"
    with imaps(dovecot_slash, ssl_context) as client:
        assert client.login(f"{user}/{MASTER_USER}", MASTER_PASSWORD) == b"Logged in"


def test_master_login_needs_an_existing_user(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext
) -> None:
    with imaps(dovecot, ssl_context) as client, pytest.raises(LoginError):
        client.login(dovecot.master_login("nobody@example.test"), MASTER_PASSWORD)


def test_sasl_plain_with_authorization_identity_logs_in_as_that_user(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user()
    with imaps(dovecot, ssl_context) as client:
        # RFC 4616: authzid = user, authcid = admin, admin's password.
        client.plain_login(MASTER_USER, MASTER_PASSWORD, authorization_identity=user)
        client.append("INBOX", b"Subject: via authzid\r\n\r\nbody\r\n")
    with imaps(dovecot, ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        assert client.select_folder("INBOX")[b"EXISTS"] == 1


def test_new_users_can_log_in_at_once_without_reload(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    # Several within one second: Dovecot re-reads a changed passwd-file at most once a second.
    for _ in range(3):
        user = make_user(prefix="instant")
        with imaps(dovecot, ssl_context) as client:
            assert client.login(user, DEFAULT_USER_PASSWORD) == b"Logged in"


def test_quota_root_shows_the_limit_and_append_past_it_fails_with_overquota(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    quota_bytes = 10_000
    user = make_user(quota_bytes=quota_bytes)
    with imaps(dovecot, ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        _, quotas = client.get_quota_root("INBOX")
        assert [(q.resource, q.limit) for q in quotas] == [
            ("STORAGE", math.ceil(quota_bytes / 1024))  # RFC 2087 units of 1024 octets
        ]
        client.append("INBOX", b"Subject: fits\r\n\r\n" + b"x" * 4000 + b"\r\n")
        with pytest.raises(IMAPClientError) as refused:
            client.append("INBOX", b"Subject: too big\r\n\r\n" + b"x" * 7000 + b"\r\n")
        # RFC 5530 response code, then Dovecot's text.
        assert f"[OVERQUOTA] {OVERQUOTA_TEXT}" in str(refused.value)
        assert client.select_folder("INBOX")[b"EXISTS"] == 1


def test_pop3_answers_and_logs_in(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user()
    pop = poplib.POP3(dovecot.host, dovecot.pop3_port, timeout=10)
    try:
        assert pop.getwelcome().startswith(b"+OK")
        pop.stls(ssl_context)
        pop.user(user)
        pop.pass_(DEFAULT_USER_PASSWORD)
        assert pop.stat() == (0, 0)
    finally:
        pop.quit()
    pops = poplib.POP3_SSL(dovecot.host, dovecot.pop3s_port, context=ssl_context, timeout=10)
    try:
        assert pops.getwelcome().startswith(b"+OK")
    finally:
        pops.quit()


def test_managesieve_greets_with_its_capabilities(dovecot: DovecotServer) -> None:
    greeting = b""
    with socket.create_connection((dovecot.host, dovecot.sieve_port), timeout=10) as sock:
        # RFC 5804: capability lines, then an OK line.
        while not any(line.startswith(b"OK") for line in greeting.split(b"\r\n")):
            chunk = sock.recv(4096)
            assert chunk, f"connection closed after {greeting!r}"
            greeting += chunk
    assert b'"IMPLEMENTATION"' in greeting
    assert b'"SIEVE"' in greeting


def test_special_use_folders_exist_for_a_fresh_account(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user()
    with imaps(dovecot, ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        listed = {name: flags for flags, _, name in client.list_folders()}
        assert client.namespace().personal[0][1] == "/"
    for name, flag in SPECIAL_USE_FOLDERS.items():
        assert flag.encode() in listed[name], (name, listed)


def test_populate_fills_nested_and_non_ascii_folders(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user()
    folders = {"INBOX": 80, "Sent": 40, "Archive/2018": 30, "Données/2019": 50}
    appended = populate(
        dovecot.host, dovecot.imaps_port, user, DEFAULT_USER_PASSWORD, folders,
        ssl_context=ssl_context,
    )  # fmt: skip
    assert len(appended) == 200
    with imaps(dovecot, ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        for folder, count in folders.items():
            assert client.folder_status(folder, ["MESSAGES"])[b"MESSAGES"] == count
        client.select_folder("Données/2019", readonly=True)
        fetched = client.fetch(client.search(), ["FLAGS", "RFC822.SIZE"])
    sent = [m for m in appended if m.folder == "Données/2019"]
    for message, data in zip(sent, (fetched[uid] for uid in sorted(fetched)), strict=True):
        assert set(message_flags(message.index)) <= {f.decode() for f in data[b"FLAGS"]}
        assert data[b"RFC822.SIZE"] == message.size
    assert any(LABEL in m.flags for m in sent)
    years = {m.internaldate.year for m in appended}
    assert len(years) >= 5


def test_make_message_is_deterministic_with_crlf_lines() -> None:
    first, date = make_message(3, folder="Données/2019", seed=7)
    again, same_date = make_message(3, folder="Données/2019", seed=7)
    assert (first, date) == (again, same_date)
    assert b"\n" not in first.replace(b"\r\n", b"")
    assert b"Content-Transfer-Encoding: base64" in first  # i % 7 == 3 carries an attachment
    assert make_message(4, folder="INBOX", with_message_id=False)[0].find(b"Message-ID:") == -1


def test_redis_answers_and_dumps_what_was_written(
    redis_server: RedisServer, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.ping()
        client.set("migrator:test:key", "value-in-the-dump")
    finally:
        client.close()
    rdb = redis_server.dump_rdb()
    assert rdb.startswith(b"REDIS")
    assert b"migrator:test:key" in rdb
    assert b"value-in-the-dump" in rdb


def test_dovecot_stop_leaves_no_process_behind(
    tls_files: TlsFiles, ssl_context: ssl.SSLContext
) -> None:
    server = DovecotServer(tls=tls_files)
    with server:
        server.add_user("stopper@example.test", "stop-Pw")
        with imaps(server, ssl_context) as client:
            client.login("stopper@example.test", "stop-Pw")
            client.noop()
            assert server.pid is not None
            processes = server.child_pids() | {server.pid}
            assert len(processes) > 3  # master, log, config, auth, imap, ...
    assert server.child_pids() == set()
    assert [pid for pid in processes if _alive(pid)] == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_replacing_a_user_changes_the_quota_for_new_sessions(
    dovecot: DovecotServer, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> None:
    user = make_user(quota_bytes=50 * 1024)
    with imaps(dovecot, ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        assert client.get_quota_root("INBOX")[1][0].limit == 50
    dovecot.add_user(user, DEFAULT_USER_PASSWORD, quota_bytes=80 * 1024)
    with imaps(dovecot, ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        assert client.get_quota_root("INBOX")[1][0].limit == 80

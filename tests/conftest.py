"""Shared fixtures: real Dovecot, Redis and EWS servers on loopback, started once per test
session; per test, fresh mailboxes (make_user, fill, make_ews_mailbox), one mailbox copied in
this process (copy_mailbox), and `migrator` as on an operator's machine (local_state) or
beside Celery worker processes (celery_env, workers).

Plain helpers live in modules: support.py (batches, options, snapshots, waiting on a
condition), celerykit.py (the `migrator` command, enqueueing, waiting on a batch), ewskit.py
(Exchange mailboxes), servers/ and ews_server/ (the servers); tests/faults adds faultkit.py.

tests/ has no __init__.py, so pytest puts tests/ itself on sys.path (rootdir "prepend" import
mode) and the helpers import as ``servers.*``.
"""

from __future__ import annotations

import itertools
import os
import ssl
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import redis
from ews_server import EwsServer
from gmailkit import GmailAccount, GmailAccountMaker, GmailMessage, fill_gmail
from graph_server import GraphServer
from graphkit import GraphApp, new_graph_app
from servers.celery_worker import Workers
from servers.certs import TlsFiles, make_tls_files
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    NON_ASCII_MASTER_PASSWORD,
    NON_ASCII_MASTER_USER,
    DovecotServer,
    MakeUser,
    SizeLimitedDovecot,
)
from servers.gmail_proxy import GmailProxy
from servers.mailgen import Fill
from servers.oauth_server import MAIL_SCOPE, OAuthServer
from servers.redis import RedisServer
from support import EWS_ADMIN, EWS_PASSWORD, CopyMailbox, TargetUser, batch_password

from migrator import dispatch
from migrator.oauth import share_tokens
from migrator.secrets import new_key
from workers.dispatch import CeleryDispatcher

# `migrator.cli.main` called in this process sends jobs as the `migrator` command does.
dispatch.use(CeleryDispatcher())


@pytest.fixture(autouse=True)
def _no_shared_tokens() -> Iterator[None]:
    """A runner shares tokens through its store's Redis for the whole process: after each
    test, no longer (the next test's Redis may be another, or stopped)."""
    yield
    share_tokens(None)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """One CA for every server in the session, so one SSL_CERT_FILE trusts them all."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def ssl_context(tls_files: TlsFiles) -> ssl.SSLContext:
    """A client context that trusts the test CA only, with hostname checking on."""
    return ssl.create_default_context(cafile=tls_files.ca_cert)


@pytest.fixture(scope="session")
def tls_env(tls_files: TlsFiles) -> dict[str, str]:
    """Environment for child processes (workers, the CLI) so OpenSSL trusts the test CA."""
    return {"SSL_CERT_FILE": str(tls_files.ca_cert)}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, emptied before the test: "we like our hygiene" (rq's tests)."""
    if not redis_server.running:  # a fault test may have left it stopped
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
def local_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`migrator` in this process as on an operator's machine: neither MIGRATOR_REDIS_URL
    nor MIGRATOR_SECRET_KEY, so `run` keeps a private Redis, and its key, under the state
    directory tmp_path / "state" (returned)."""
    for name in ("MIGRATOR_REDIS_URL", "MIGRATOR_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("MIGRATOR_STATE_DIR", str(state))
    return state


@pytest.fixture
def lock_ttl() -> float:
    """Seconds a mailbox lock outlives its worker's last heartbeat (MIGRATOR_LOCK_TTL): how
    soon a resumed task may take over a killed worker's mailbox."""
    return 3.0


@pytest.fixture
def celery_env(
    redis_url: str,
    tls_files: TlsFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    lock_ttl: float,
) -> dict[str, str]:
    """The environment `migrator` in this process and the Celery worker processes share:
    the session Redis, a fresh secret key, a state directory under tmp_path, the lock TTL,
    and trust in the test CA."""
    values = {
        "MIGRATOR_REDIS_URL": redis_url,
        "MIGRATOR_SECRET_KEY": new_key(),
        "MIGRATOR_STATE_DIR": str(tmp_path / "state"),
        "MIGRATOR_LOCK_TTL": str(lock_ttl),
        "SSL_CERT_FILE": str(tls_files.ca_cert),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}


@pytest.fixture
def workers(celery_env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    """Celery worker processes (`workers.start("worker1", concurrency=2)`) in celery_env,
    logging under tmp_path; each is stopped when the test ends."""
    started = Workers(celery_env, tmp_path)
    yield started
    started.stop()


def _dovecot(tls_files: TlsFiles, separator: str) -> Iterator[DovecotServer]:
    server = DovecotServer(
        master_user_separator=separator,
        master_users={
            MASTER_USER: MASTER_PASSWORD,
            NON_ASCII_MASTER_USER: NON_ASCII_MASTER_PASSWORD,
        },
        tls=tls_files,
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def dovecot(tls_files: TlsFiles) -> Iterator[DovecotServer]:
    """Dovecot whose master user logs in as "user*admin" with password MASTER_PASSWORD (and
    NON_ASCII_MASTER_USER as "user*admin-intl" with NON_ASCII_MASTER_PASSWORD)."""
    yield from _dovecot(tls_files, "*")


@pytest.fixture(scope="session")
def limited_dovecot(tls_files: TlsFiles) -> Iterator[DovecotServer]:
    """A Dovecot refusing any message over 64 KB with NO [LIMIT] (a message the target
    skips and names); started only when asked for."""
    with SizeLimitedDovecot(master_users={MASTER_USER: MASTER_PASSWORD}, tls=tls_files) as server:
        yield server


@pytest.fixture(scope="session")
def oauth_server(tls_files: TlsFiles) -> Iterator[OAuthServer]:
    """Our OAuth 2.0 server over HTTPS on loopback (tokens live 20 s); started only when
    asked for."""
    with OAuthServer(tls_files) as server:
        yield server


@pytest.fixture(scope="session")
def dovecot_oauth(tls_files: TlsFiles, oauth_server: OAuthServer) -> Iterator[DovecotServer]:
    """A Dovecot that also takes OAUTHBEARER and XOAUTH2 logins, checking each token with
    `oauth_server` (RFC 7662 introspection); passwords and the master user work as ever."""
    server = DovecotServer(
        master_users={MASTER_USER: MASTER_PASSWORD},
        tls=tls_files,
        oauth_introspection_url=oauth_server.introspection_url,
        oauth_scopes=MAIL_SCOPE,
    )
    with server:
        yield server


@pytest.fixture(scope="session")
def dovecot_slash(tls_files: TlsFiles) -> Iterator[DovecotServer]:
    """A second Dovecot whose master logins read "user/admin"; started only when asked for."""
    yield from _dovecot(tls_files, "/")


_user_numbers = itertools.count(1)


@pytest.fixture
def make_user(dovecot: DovecotServer) -> MakeUser:
    """Create a fresh user and return the login name, e.g. "user7@example.test".

    ``make_user(password=DEFAULT_USER_PASSWORD, *, quota_bytes=None, prefix="user",
    server=dovecot)``; names are unique for the session, so tests never share a mailbox.
    """

    def make(
        password: str = DEFAULT_USER_PASSWORD,
        *,
        quota_bytes: int | None = None,
        prefix: str = "user",
        server: DovecotServer | None = None,
    ) -> str:
        name = f"{prefix}{next(_user_numbers)}@example.test"
        (server or dovecot).add_user(name, password, quota_bytes=quota_bytes)
        return name

    return make


@pytest.fixture
def target_user(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext, tls_files: TlsFiles
) -> TargetUser:
    """A fresh user: `.name`, `.session()` (their own IMAPS session) and `.target()` (their
    mailbox as a migration target, the master user acting for them)."""
    return TargetUser(dovecot, ssl_context, tls_files.ca_cert, make_user())


@pytest.fixture
def fill(dovecot: DovecotServer, ssl_context: ssl.SSLContext) -> Fill:
    """``fill(login, {"INBOX": 30, "Archive/2019": 10}, password=DEFAULT_USER_PASSWORD, *,
    server=dovecot, size_hint=2000, seed=0)``: generated mail appended to a mailbox of the
    test Dovecot; the messages appended. ``fill.append(login, folder, messages, password)``
    appends mail as it is (servers.mailgen.Fill)."""
    return Fill(dovecot, ssl_context)


@pytest.fixture
def copy_mailbox(dovecot: DovecotServer, tls_files: TlsFiles, redis_url: str) -> CopyMailbox:
    """``copy_mailbox(source, target, *, password=DEFAULT_USER_PASSWORD, source_url=None,
    into=None, batch_id="b1", rewrite=None, **options)``: one mailbox copied in this
    process, its status at the end (support.CopyMailbox)."""
    return CopyMailbox(dovecot, tls_files.ca_cert, redis_url)


@pytest.fixture(scope="session")
def ews_server() -> Iterator[EwsServer]:
    """One schema-checking EWS server for the session, with an impersonating service account;
    its teardown asserts that the whole session made no schema violation."""
    with EwsServer() as server:
        server.add_user(EWS_ADMIN, EWS_PASSWORD, mailbox=False, impersonation=True)
        yield server
        server.assert_no_violations()
        assert server.requests_validated > 0 and server.responses_validated > 0


@pytest.fixture(scope="session")
def ews_https_server(tls_files: TlsFiles) -> Iterator[EwsServer]:
    """A second EWS server, over HTTPS with the test CA's certificate ("localhost",
    127.0.0.1); the other EWS tests keep plain HTTP. Started only when asked for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    with EwsServer(tls=context) as server:
        server.add_user(EWS_ADMIN, EWS_PASSWORD, mailbox=False, impersonation=True)
        yield server
        server.assert_no_violations()


@pytest.fixture
def ews(ews_server: EwsServer) -> Iterator[EwsServer]:
    """The session EWS server with no faults and no size limit; no violation by this test."""
    ews_server.faults.clear()
    ews_server.max_message_size = None
    yield ews_server
    ews_server.faults.clear()
    ews_server.max_message_size = None
    ews_server.assert_no_violations()


_ews_numbers = itertools.count(1)


@pytest.fixture
def make_ews_mailbox(ews: EwsServer) -> MakeUser:
    """A fresh Exchange mailbox on the session EWS server, e.g. "box3@example.com"."""

    def make(password: str = EWS_PASSWORD, *, quota_bytes: int | None = None, **_: object) -> str:
        name = f"box{next(_ews_numbers)}@example.com"
        ews.add_user(name, password)
        ews.store[name].quota_bytes = quota_bytes
        return name

    return make  # type: ignore[return-value]


@pytest.fixture(scope="session")
def graph_server(tls_files: TlsFiles, oauth_server: OAuthServer) -> Iterator[GraphServer]:
    """One Microsoft Graph server for the session, over HTTPS, taking the test OAuth
    server's tokens; its teardown asserts that the whole session made no schema violation
    (every JSON body against v1.0-metadata.xml, importMime against its contract)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    with GraphServer(context, oauth_server.introspect) as server:
        yield server
        server.assert_no_violations()
        # A session that wrote mail checked bodies too: the checks ran, not merely passed.
        assert server.validated > 0 or not (server.imported or server.created)


@pytest.fixture
def graph(graph_server: GraphServer) -> Iterator[GraphServer]:
    """The session Graph server with no faults and no size limit; no violation by this test."""
    graph_server.faults.clear()
    graph_server.max_message_size = None
    graph_server.latency = 0.0
    before = len(graph_server.violations)
    yield graph_server
    graph_server.faults.clear()
    graph_server.max_message_size = None
    assert graph_server.violations[before:] == [], "Graph schema violations by this test"


@pytest.fixture
def graph_app(oauth_server: OAuthServer, tmp_path: Path) -> GraphApp:
    """An Entra ID app with Mail.ReadWrite and Mail-Advanced.ReadWrite.All."""
    return new_graph_app(oauth_server, tmp_path)


_graph_numbers = itertools.count(1)


@pytest.fixture
def make_graph_mailbox(graph: GraphServer) -> Callable[..., str]:
    """A fresh mailbox on the session Graph server, e.g. "gbox3@example.test"."""

    def make(*, quota_bytes: int | None = None) -> str:
        name = f"gbox{next(_graph_numbers)}@example.test"
        graph.add_mailbox(name, quota_bytes=quota_bytes)
        return name

    return make


@pytest.fixture
def gmail_account(
    dovecot: DovecotServer, tls_files: TlsFiles, ssl_context: ssl.SSLContext, make_user: MakeUser
) -> Iterator[GmailAccountMaker]:
    """``gmail_account(messages)``: a Gmail-shaped mailbox of the test Dovecot holding
    `messages` (gmailkit.gmail_messages), behind its own GmailProxy, which announces
    X-GM-EXT-1 and answers X-GM-MSGID and X-GM-LABELS (gmailkit.GmailAccount)."""
    proxies: list[GmailProxy] = []

    def make(messages: Sequence[GmailMessage]) -> GmailAccount:
        password = batch_password("gmail")
        login = make_user(password, prefix="gmail")
        fill_gmail(dovecot, login, password, messages, ssl_context)
        proxy = GmailProxy(dovecot.imap_port, tls_files, login, password).start()
        proxies.append(proxy)
        return GmailAccount(login, password, proxy, list(messages))

    yield make
    for proxy in proxies:
        proxy.close()

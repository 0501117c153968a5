"""OAuth 2.0 logins end to end: msal against our own OAuth server over HTTPS, Dovecot's
oauth2 passdb checking every token with it, a Celery worker copying a mailbox for longer
than its tokens live."""

from __future__ import annotations

import hashlib
import os
import ssl
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from oauthkit import Kicker, app_config, new_app, oauth_arguments
from servers.celery_worker import Worker
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, MASTER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import PopulatedMessage, populate
from servers.oauth_server import ISSUED_SECRETS, OAuthServer
from servers.proxy import TcpProxy
from servers.redis import RedisServer
from support import default_map_target, snapshot, write_batch

from migrator.cli import main
from migrator.model import ConnectOptions
from migrator.oauth import tokens_for
from migrator.report import MailboxState
from migrator.secrets import new_key
from migrator.state import MailboxStatus, StateStore

MAILBOX = {"INBOX": 450, "Sent Messages": 250, "Archive/2019": 300}


def test_dovecot_takes_tokens_beside_passwords_and_master_logins(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    tmp_path: Path,
) -> None:
    user = make_user(server=dovecot_oauth)
    client_id, secret_file = new_app(oauth_server, tmp_path)
    config = app_config(oauth_server, client_id, secret_file)
    tokens = tokens_for(config, ConnectOptions(ca_file=str(tls_files.ca_cert)))
    token = tokens.token(user)
    assert tokens.token(user) == token  # kept while fresh
    port = dovecot_oauth.imaps_port
    with IMAPClient("127.0.0.1", port, ssl=True, ssl_context=ssl_context) as client:
        client.oauthbearer_login(user, token.reveal())
        assert client.select_folder("INBOX")
    with IMAPClient("127.0.0.1", port, ssl=True, ssl_context=ssl_context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
    with IMAPClient("127.0.0.1", port, ssl=True, ssl_context=ssl_context) as client:
        client.login(dovecot_oauth.master_login(user), MASTER_PASSWORD)
    with (
        IMAPClient("127.0.0.1", port, ssl=True, ssl_context=ssl_context) as client,
        pytest.raises(Exception, match="AUTHENTICATIONFAILED"),
    ):
        client.oauthbearer_login(user, "not-a-token")


@pytest.fixture
def env(
    redis_url: str, tls_files: TlsFiles, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    values = {
        "MIGRATOR_REDIS_URL": redis_url,
        "MIGRATOR_SECRET_KEY": new_key(),
        "MIGRATOR_STATE_DIR": str(tmp_path / "state"),
        "MIGRATOR_LOCK_TTL": "3",
        "SSL_CERT_FILE": str(tls_files.ca_cert),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}


@pytest.fixture
def workers(env: dict[str, str]) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def enqueue(tmp_path: Path, args: list[str]) -> str:
    out = tmp_path / "enqueue.out"
    with out.open("w") as handle:
        old, sys.stdout = sys.stdout, handle
        try:
            code = main(["enqueue", *args])
        finally:
            sys.stdout = old
    assert code == 0, out.read_text()
    return out.read_text().strip().splitlines()[-1]


def wait_final(store: StateStore, batch_id: str, timeout: float = 240) -> list[MailboxStatus]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = store.mailboxes(batch_id)
        if rows and all(r.state.final for r in rows):
            return rows
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not end: {store.mailboxes(batch_id)}")


def assert_exact_copy(
    server: DovecotServer, sent: list[PopulatedMessage], target: str, ctx: ssl.SSLContext
) -> None:
    expected: dict[str, Counter[str]] = {}
    for message in sent:
        folder = default_map_target(tuple(message.folder.split("/")))
        expected.setdefault(folder, Counter())[hashlib.sha256(message.raw).hexdigest()] += 1
    view = snapshot(server, target, DEFAULT_USER_PASSWORD, ctx)
    got = {name: Counter(s.sha256 for s in items) for name, items in view.items() if items}
    assert got == expected


def no_token_in(data: bytes) -> list[str]:
    return [s for s in ISSUED_SECRETS if s.encode() in data]


# Tokens live this long in the long copies: Dovecot checks a token only at login, so a copy
# outlives one whenever a session that logs in again finds its token run out.
SHORT_LIFETIME = 3.0
# When the administrator ends the source's sessions (messages done): each time once every
# token the app holds has run out, so the next logins need a new one.
KICKS_AT = (250, 600)


def test_a_copy_outlives_its_tokens_through_a_celery_worker(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_server: RedisServer,
    env: dict[str, str],
    workers: list[Worker],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(oauth_server, "lifetime", SHORT_LIFETIME)
    source, target = make_user(server=dovecot_oauth), make_user(server=dovecot_oauth)
    sent = populate(
        "127.0.0.1",
        dovecot_oauth.imaps_port,
        source,
        DEFAULT_USER_PASSWORD,
        MAILBOX,
        ssl_context=ssl_context,
    )
    assert len(sent) == 1000
    client_id, secret_file = new_app(oauth_server, tmp_path)
    store = StateStore.from_url(env["MIGRATOR_REDIS_URL"])
    kicker = Kicker(oauth_server, client_id, dovecot_oauth, (source, target), KICKS_AT)

    # A far server on a slow link: the copy takes long enough for the kicks to land in it.
    with TcpProxy(dovecot_oauth.imaps_port, latency=0.005, bandwidth=150_000) as proxy:
        server = f"imaps://127.0.0.1:{proxy.port}"
        batch = write_batch(
            tmp_path / "batch.csv",
            [{"SourceIdentity": source, "SourceServer": server, "SourceLoginID": source,
              "TargetIdentity": target}],
        )  # fmt: skip
        workers.append(Worker(env, tmp_path / "worker.log"))
        batch_id = enqueue(
            tmp_path,
            [str(batch), "--method", "individual", "--source-auth", "oauth2",
             "--target-auth", "oauth2", *oauth_arguments(oauth_server, client_id, secret_file),
             "--target-server", server, "--ca-file", str(tls_files.ca_cert),
             "--late-commit-grace", "0.2"],
        )  # fmt: skip
        kicker.start(lambda: progress(store, batch_id))
        (row,) = wait_final(store, batch_id)
        kicker.join()

    assert not kicker.problems, kicker.problems
    assert row.state is MailboxState.DONE, row
    assert row.done_messages == row.total_messages == 1000
    assert_exact_copy(dovecot_oauth, sent, target, ssl_context)
    assert_renewed(oauth_server, client_id, kicker)
    assert not no_token_in(redis_server.dump_rdb())
    assert not no_token_in(workers[0].log_text().encode())


def progress(store: StateStore, batch_id: str) -> tuple[int, bool]:
    rows = store.mailboxes(batch_id)
    return (rows[0].done_messages, rows[0].state.final) if rows else (0, False)


def assert_renewed(oauth: OAuthServer, client_id: str, kicker: Kicker) -> None:
    """Each kick came mid-copy, after every token had run out: the worker asked for a new
    token each time, and the server took each (both ends log in with the app's token)."""
    assert len(kicker.kicked) == len(KICKS_AT), kicker.kicked
    assert oauth.tokens_issued(client_id) >= 1 + len(KICKS_AT)
    assert oauth.tokens_accepted(client_id) >= 1 + len(KICKS_AT)

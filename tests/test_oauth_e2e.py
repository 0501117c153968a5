"""OAuth 2.0 logins end to end: msal against our own OAuth server over HTTPS, Dovecot's
oauth2 passdb checking every token with it, a Celery worker copying a mailbox of 1,000
messages, from IMAP and from POP3, for longer than its tokens live (tokens of 3 s; the
sessions ended twice, each time once every token had run out, so the worker must renew
them to go on)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
from celerykit import cli, wait_for
from imapclient import IMAPClient
from oauthkit import Kicker, app_config, new_app, oauth_arguments
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, MASTER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import populate
from servers.oauth_server import ISSUED_SECRETS, OAuthServer
from servers.proxy import TcpProxy
from servers.redis import RedisServer
from support import assert_copied_exactly, write_batch

from migrator.model import ConnectOptions
from migrator.oauth import tokens_for
from migrator.report import MailboxState
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


def no_token_in(data: bytes) -> list[str]:
    return [s for s in ISSUED_SECRETS if s.encode() in data]


# Tokens live this long in the long copies: Dovecot checks a token only at login, so a copy
# outlives one whenever a session that logs in again finds its token run out.
SHORT_LIFETIME = 3.0
# When the administrator ends the mailboxes' sessions (messages done): each time once every
# token the app holds has run out, so the next logins need a new one.
KICKS_AT = (250, 600)


@dataclass
class Site:
    """The test Dovecot with OAuth logins, a Celery worker, and an app to log in as."""

    dovecot: DovecotServer
    oauth: OAuthServer
    tls: TlsFiles
    context: ssl.SSLContext
    redis: RedisServer
    env: dict[str, str]
    workers: Workers
    dir: Path

    def copy(
        self, source: str, target: str, source_port: int, *, pop: bool = False
    ) -> tuple[MailboxStatus, Kicker, str]:
        """The mailbox copied by a worker, both ends logging in with a new app's tokens, the
        source over a far, slow link; the sessions ended at KICKS_AT once the tokens ran out.
        (its row, the kicker, the app's client id)"""
        client_id, secret_file = new_app(self.oauth, self.dir)
        store = StateStore.from_url(self.env["MIGRATOR_REDIS_URL"])
        kicker = Kicker(self.oauth, client_id, self.dovecot, (source, target), KICKS_AT)
        # The copy takes long enough for the kicks to land in it (POP3 asks once a message,
        # twice with the listing's TOP: less latency makes it as long).
        latency, bandwidth = (0.001, 300_000) if pop else (0.005, 150_000)
        with TcpProxy(source_port, latency=latency, bandwidth=bandwidth) as proxy:
            scheme = "pop3s" if pop else "imaps"
            batch = write_batch(
                self.dir / "batch.csv",
                [{"SourceIdentity": source, "SourceServer": f"{scheme}://127.0.0.1:{proxy.port}",
                  "SourceLoginID": source, "TargetIdentity": target}],
            )  # fmt: skip
            self.workers.start()
            code, out = cli(
                ["enqueue", str(batch), "--method", "individual", "--source-auth", "oauth2",
                 "--target-auth", "oauth2", *oauth_arguments(self.oauth, client_id, secret_file),
                 "--target-server", f"imaps://127.0.0.1:{self.dovecot.imaps_port}",
                 "--ca-file", str(self.tls.ca_cert), "--late-commit-grace", "0.2",
                 *(["--source-type", "pop"] if pop else [])],
            )  # fmt: skip
            assert code == 0, out
            batch_id = out.strip().splitlines()[-1]
            kicker.start(lambda: progress(store, batch_id))
            (row,) = wait_for(store, batch_id, timeout=240)
            kicker.join()
        return row, kicker, client_id

    def assert_no_token_kept(self) -> None:
        assert not no_token_in(self.redis.dump_rdb())
        assert not no_token_in(self.workers[0].log_text().encode())


@pytest.fixture
def site(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    tls_files: TlsFiles,
    ssl_context: ssl.SSLContext,
    redis_server: RedisServer,
    celery_env: dict[str, str],
    workers: Workers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Site:
    monkeypatch.setattr(oauth_server, "lifetime", SHORT_LIFETIME)
    return Site(
        dovecot_oauth,
        oauth_server,
        tls_files,
        ssl_context,
        redis_server,
        celery_env,
        workers,
        tmp_path,
    )


def test_a_copy_outlives_its_tokens_through_a_celery_worker(
    site: Site, make_user: MakeUser
) -> None:
    source, target = make_user(server=site.dovecot), make_user(server=site.dovecot)
    sent = populate(
        "127.0.0.1", site.dovecot.imaps_port, source, DEFAULT_USER_PASSWORD, MAILBOX,
        ssl_context=site.context,
    )  # fmt: skip
    assert len(sent) == 1000

    row, kicker, client_id = site.copy(source, target, site.dovecot.imaps_port)

    assert not kicker.problems, kicker.problems
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == 1000
    assert_copied_exactly(site.dovecot, sent, target, DEFAULT_USER_PASSWORD, site.context)
    assert_renewed(site.oauth, client_id, kicker)
    site.assert_no_token_kept()


def test_a_pop3_source_outlives_its_tokens_through_a_celery_worker(
    site: Site, make_user: MakeUser
) -> None:
    source, target = make_user(server=site.dovecot), make_user(server=site.dovecot)
    sent = populate(
        "127.0.0.1", site.dovecot.imaps_port, source, DEFAULT_USER_PASSWORD, {"INBOX": 1000},
        ssl_context=site.context,
    )  # fmt: skip

    row, kicker, client_id = site.copy(source, target, site.dovecot.pop3s_port, pop=True)

    assert not kicker.problems, kicker.problems
    assert row.state is MailboxState.SYNCED, row
    assert row.done_messages == row.total_messages == 1000
    # POP3 has no flags to carry.
    assert_copied_exactly(
        site.dovecot, sent, target, DEFAULT_USER_PASSWORD, site.context, flags=False
    )
    assert_renewed(site.oauth, client_id, kicker)
    site.assert_no_token_kept()


def progress(store: StateStore, batch_id: str) -> tuple[int, bool]:
    rows = store.mailboxes(batch_id)
    return (rows[0].done_messages, rows[0].state.final) if rows else (0, False)


def assert_renewed(oauth: OAuthServer, client_id: str, kicker: Kicker) -> None:
    """Each kick came mid-copy, after every token had run out: the worker asked for a new
    token each time, and the server took each (both ends log in with the app's token)."""
    assert len(kicker.kicked) == len(KICKS_AT), kicker.kicked
    assert oauth.tokens_issued(client_id) >= 1 + len(KICKS_AT)
    assert oauth.tokens_accepted(client_id) >= 1 + len(KICKS_AT)

"""OAuth 2.0 logins that go wrong: the app's tokens revoked (and its consent taken back) in
the middle of a copy, an app without the mailbox permission, and a token server that is
down.  Each ends the mailbox with one clear error that says what to fix; nothing copied
before it is lost or sent again once the operator has fixed it and runs the mailbox again.

The source logs in with the app's tokens (Dovecot checks each one with the test OAuth
server, as Exchange Online checks an Entra ID app's); the target is Dovecot's master user.
Dovecot checks a token at login only, so the tests end the source's sessions
(`doveadm kick`) to make the copier log in again with what the token server now says.
"""

from __future__ import annotations

import dataclasses
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultkit import run_in_process, run_options, source_and_target
from oauthkit import app_config, new_app
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import populate
from servers.oauth_server import OAuthServer
from servers.proxy import TcpProxy

from migrator import runner
from migrator.oauth import OAuthConfig
from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore

FOLDERS = {"INBOX": 160, "Archive": 60}
TOTAL = sum(FOLDERS.values())
BANDWIDTH = 600_000  # bytes a second from the source: the copy lasts some 3 s
KICK_AT = 30  # messages done when the fault comes: past login, listing and the first appends
# A few messages a fetch, the reader little ahead of the writer: the source is still
# fetching when its sessions end.
FETCH_WINDOW = 10
PREFETCH = 200_000  # bytes


@pytest.fixture
def few_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three passes instead of five, so a fault that lasts fails the mailbox within seconds
    (the waits between passes are 1 s and 2 s); the copier's own retrying is unchanged."""
    job_options = runner.copy_options
    monkeypatch.setattr(
        runner, "copy_options", lambda job: dataclasses.replace(job_options(job), max_passes=3)
    )


@pytest.fixture
def token_server(oauth_server: OAuthServer) -> Iterator[OAuthServer]:
    """The session's OAuth server, up again after the test whatever it did."""
    yield oauth_server
    if not oauth_server.running:
        oauth_server.start()


@dataclasses.dataclass
class Mailbox:
    source: str
    target: str
    dovecot: DovecotServer
    tls: TlsFiles
    store: StateStore
    link: TcpProxy

    def run(self, batch_id: str, app: OAuthConfig) -> MailboxStatus:
        """The mailbox through runner.execute_job, the source (over a slow link, so that
        the copy lasts a few seconds) logging in with `app`."""
        options, source_url = run_options(
            self.link.port,
            self.dovecot.imaps_port,
            self.tls.ca_cert,
            source_auth=app,
            prefetch_bytes=PREFETCH,
            fetch_window=FETCH_WINDOW,
        )
        # The row's password is never sent: the source end logs in with bearer tokens.
        return run_in_process(
            self.store, batch_id, options, source_url, self.source, "unused", self.target
        )

    def during(self, batch_id: str, fault: Callable[[], None]) -> threading.Thread:
        """A thread that brings `fault` once KICK_AT messages are done, then ends the
        source's sessions so that it logs in again."""

        def watch() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = self.store.mailbox(batch_id, "00001")
                if row is not None and row.done_messages >= KICK_AT:
                    fault()
                    self.dovecot.doveadm("kick", self.source)
                    return
                time.sleep(0.01)

        thread = threading.Thread(target=watch)
        thread.start()
        return thread


@pytest.fixture
def mailbox(
    dovecot_oauth: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> Iterator[Mailbox]:
    source, target = make_user(server=dovecot_oauth), make_user(server=dovecot_oauth)
    populate(
        "127.0.0.1", dovecot_oauth.imaps_port, source, DEFAULT_USER_PASSWORD, FOLDERS,
        ssl_context=ssl_context, size_hint=8_000,
    )  # fmt: skip
    store = StateStore.from_url(redis_url)
    with TcpProxy(dovecot_oauth.imaps_port, bandwidth=BANDWIDTH) as link:
        yield Mailbox(source, target, dovecot_oauth, tls_files, store, link)


def check_exactly_once(mailbox: Mailbox, ssl_context: ssl.SSLContext, exactly_once: object) -> None:
    views = source_and_target(
        mailbox.dovecot,
        (mailbox.source, DEFAULT_USER_PASSWORD),
        (mailbox.target, DEFAULT_USER_PASSWORD),
        ssl_context,
    )
    exactly_once(*views)  # type: ignore[operator]


def test_tokens_revoked_mid_copy_fail_the_mailbox_clearly_and_a_rerun_adds_the_rest_once(
    mailbox: Mailbox,
    token_server: OAuthServer,
    ssl_context: ssl.SSLContext,
    exactly_once: object,
    tmp_path: Path,
) -> None:
    app = app_config(token_server, *new_app(token_server, tmp_path))
    assert app.client_id is not None
    # The tenant's admin revokes the app's tokens and takes its consent back mid-copy.
    watcher = mailbox.during("revoked", lambda: token_server.revoke(app.client_id, consent=True))
    status = mailbox.run("revoked", app)
    watcher.join()

    assert status.state is MailboxState.FAILED, status
    assert KICK_AT <= status.done_messages < TOTAL
    error = status.last_error
    assert f"login as {mailbox.source}" not in error  # the token service said no first
    assert "got no token" in error and "AADSTS65001" in error, error
    assert "needs admin consent" in error

    token_server.consent(app.client_id)
    issued = token_server.tokens_issued(app.client_id)
    status = mailbox.run("revoked-again", app)

    assert status.state is MailboxState.SYNCED, status
    # The kept token was revoked: the server refused it and the worker asked for a new one.
    assert token_server.tokens_issued(app.client_id) == issued + 1
    check_exactly_once(mailbox, ssl_context, exactly_once)


def test_an_app_without_the_mailbox_permission_fails_saying_what_to_grant(
    mailbox: Mailbox,
    token_server: OAuthServer,
    ssl_context: ssl.SSLContext,
    exactly_once: object,
    tmp_path: Path,
) -> None:
    # Registered with Exchange's EWS permission only: tokens are issued, IMAP refuses them.
    app = app_config(token_server, *new_app(token_server, tmp_path, roles=("EWS.AccessAsApp",)))
    assert app.client_id is not None and app.secret is not None
    status = mailbox.run("no-permission", app)

    assert status.state is MailboxState.FAILED, status
    assert status.done_messages == 0
    assert f"login as {mailbox.source} with a fresh token" in status.last_error, status.last_error
    assert "IMAP.AccessAsApp" in status.last_error and "Add-MailboxPermission" in status.last_error
    # The kept token, then one fresh one: refused twice, never a third time.
    assert token_server.tokens_issued(app.client_id) == 2

    # The admin grants IMAP.AccessAsApp; tokens issued from now on carry it.
    token_server.add_app(app.client_id, secret=app.secret.reveal())
    status = mailbox.run("permission-granted", app)

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == TOTAL
    check_exactly_once(mailbox, ssl_context, exactly_once)


@pytest.mark.usefixtures("few_passes")
def test_a_token_server_that_is_down_fails_the_mailbox_clearly_and_a_rerun_adds_the_rest_once(
    mailbox: Mailbox,
    token_server: OAuthServer,
    ssl_context: ssl.SSLContext,
    exactly_once: object,
    tmp_path: Path,
) -> None:
    app = app_config(token_server, *new_app(token_server, tmp_path))
    watcher = mailbox.during("down", token_server.stop)
    status = mailbox.run("down", app)
    watcher.join()

    assert status.state is MailboxState.FAILED, status
    assert KICK_AT <= status.done_messages < TOTAL
    assert "the token service cannot be reached" in status.last_error, status.last_error
    assert str(app.client_id) in status.last_error  # which app: the operator has several

    token_server.start()
    status = mailbox.run("up-again", app)

    assert status.state is MailboxState.SYNCED, status
    check_exactly_once(mailbox, ssl_context, exactly_once)

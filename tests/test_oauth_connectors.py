"""OAuth 2.0 logins beyond IMAP copies: Sieve forwarding set and removed over ManageSieve
with a token, and an Exchange target (the test EWS server) taking the app's bearer token.
(A POP3 source: tests/test_oauth_e2e.py.)  Each logs in with tokens from the test OAuth server, as
an Entra ID app's; the servers check them there."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import ssl
from collections import Counter
from pathlib import Path

import pytest
from ews_server import EwsServer
from oauthkit import app_config, new_app, oauth_arguments
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import populate
from servers.oauth_server import DOMAIN, ISSUED_SECRETS, OAuthServer
from servers.redis import RedisServer
from support import ews_settings, run_in_process, write_batch

from migrator.batch import AccessMethod
from migrator.cli import main
from migrator.connectors.ews.settings import endpoint_address
from migrator.connectors.imap.managesieve import SieveClient
from migrator.model import AdminLogin, ConnectOptions
from migrator.prepare import RunOptions, TargetSpec
from migrator.report import MailboxState
from migrator.secrets import Secret
from migrator.state import StateStore


def digests(bodies: list[bytes]) -> Counter[str]:
    return Counter(hashlib.sha256(b).hexdigest() for b in bodies)


def assert_no_token_kept(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """No token or client secret in Redis (as stored) or in what was logged."""
    dump, logged = redis_server.dump_rdb(), caplog.text.encode()
    assert not [s for s in ISSUED_SECRETS if s.encode() in dump or s.encode() in logged]


def test_forwarding_is_set_and_removed_over_managesieve_with_a_token(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    local_state: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = make_user(server=dovecot_oauth), make_user(server=dovecot_oauth)
    client_id, secret_file = new_app(oauth_server, tmp_path)
    csv = write_batch(
        tmp_path / "b.csv",
        [{"SourceIdentity": source, "SourceLoginID": source, "TargetIdentity": target,
          "SourceServer": f"imaps://127.0.0.1:{dovecot_oauth.imaps_port}"}],
    )  # fmt: skip
    args = [
        "--method", "individual", "--sieve-port", str(dovecot_oauth.sieve_port),
        "--ca-file", str(tls_files.ca_cert), "--source-auth", "oauth2",
        *oauth_arguments(oauth_server, client_id, secret_file),
    ]  # fmt: skip

    def forwarding(action: str) -> dict[str, str]:
        capsys.readouterr()
        code = main(["forwarding", action, str(csv), "--json", *args])
        out = capsys.readouterr().out
        assert code == 0, out
        assert not [s for s in ISSUED_SECRETS if s in out]
        (row,) = json.loads(out)
        return dict(row)

    def active_script() -> str | None:
        client = SieveClient.connect(
            "127.0.0.1", dovecot_oauth.sieve_port, context=ssl_context, timeout=10
        )
        with client:
            client.authenticate(source, Secret(DEFAULT_USER_PASSWORD))
            scripts = client.list_scripts()
            active = [s.name for s in scripts if s.active]
            return client.get_script(active[0]) if active else None

    row = forwarding("set")
    assert row["state"] == "set" and row["method"] == "sieve", row
    script = active_script()
    assert script is not None and f'redirect :copy "{target}"' in script, script
    accepted = oauth_server.tokens_accepted(client_id)
    assert accepted >= 1

    row = forwarding("remove")
    assert row["state"] == "removed", row
    assert active_script() is None
    assert forwarding("status")["state"] == "not_set"


def test_an_exchange_target_takes_the_apps_bearer_token(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    ews_https_server: EwsServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
    redis_server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    ews = ews_https_server  # bearer tokens go over TLS only
    source = make_user(server=dovecot_oauth)
    target = f"oauth-{source.split('@')[0]}@example.com"
    ews.add_user(target, "never-used", mailbox=True)  # the app acts for it
    sent = populate(
        "127.0.0.1", dovecot_oauth.imaps_port, source, DEFAULT_USER_PASSWORD,
        {"INBOX": 40, "Archive": 20}, ssl_context=ssl_context,
    )  # fmt: skip
    client_id, secret_file = new_app(oauth_server, tmp_path)
    app = app_config(oauth_server, client_id, secret_file)
    # Exchange takes an app token with full_access_as_app (here EWS.AccessAsApp) and lets
    # its service principal impersonate every mailbox.
    ews.impersonators.add(f"app-{client_id}@{DOMAIN}")
    principals: list[str | None] = []

    def check(token: str) -> str | None:
        principals.append(oauth_server.principal(token, "EWS.AccessAsApp"))
        return principals[-1]

    ews.bearer = check
    try:
        url = ews.url
        options = RunOptions(
            target=TargetSpec(
                server=endpoint_address(url),
                method=AccessMethod.INDIVIDUAL,
                admin=AdminLogin("", Secret("")),
                kind="ews",
                settings=dataclasses.replace(
                    ews_settings(url), connect=ConnectOptions(ca_file=str(tls_files.ca_cert))
                ),
                auth=app,
            ),
            connect=ConnectOptions(timeout=30, ca_file=str(tls_files.ca_cert)),
            source_auth=app,
        )
        status = run_in_process(
            StateStore.from_url(redis_url), "ews-oauth", options,
            f"imaps://127.0.0.1:{dovecot_oauth.imaps_port}", source, "", target,
        )  # fmt: skip
    finally:
        ews.bearer = None

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == 60
    box = ews.store[target]
    stored = [i.mime for f in box.folders.values() for i in box.items_in(f.id)]
    assert digests(stored) == digests([m.raw for m in sent])
    # Every EWS request carried the app's token, and each was good: one token served the
    # IMAP source and the Exchange target alike (an app-only token is no one user's).
    assert principals and set(principals) == {f"app-{client_id}@{DOMAIN}"}
    assert oauth_server.tokens_issued(client_id) == 1
    assert_no_token_kept(redis_server, caplog)

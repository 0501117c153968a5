"""Each token provider against the test OAuth server, its token then taken by Dovecot at an
IMAP login through the IMAP connector: google-auth signing a service account's JWT (RFC
7523), msal proving an app's certificate with a signed assertion, a token file and a token
command that hand on tokens another tool got."""

from __future__ import annotations

import datetime
import json
import shlex
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from oauthkit import app_config, new_app
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.oauth_server import TENANT, OAuthServer
from servers.redis import RedisServer

from migrator.batch import parse_server
from migrator.connectors.imap.connection import connect
from migrator.errors import TokenRefused
from migrator.model import ConnectOptions, TokenLogin
from migrator.oauth import OAuthConfig, ProviderKind, Tokens, share_tokens, tokens_for
from migrator.oauth.providers import make_provider
from migrator.secrets import Secret, SecretBox, new_key
from migrator.state import StateStore


@pytest.fixture
def options(tls_files: TlsFiles) -> ConnectOptions:
    return ConnectOptions(timeout=10, ca_file=str(tls_files.ca_cert))


def log_in(dovecot: DovecotServer, user: str, tokens: Tokens, options: ConnectOptions) -> None:
    """An IMAP login as `user` with `tokens`, as a copy makes it; INBOX opened."""
    server = parse_server(f"imaps://127.0.0.1:{dovecot.imaps_port}")
    client = connect(server, TokenLogin(user, tokens), options, what=f"mailbox {user}")
    try:
        assert client.select_folder("INBOX", readonly=True)
    finally:
        client.logout()


def test_a_google_service_account_gets_a_token_per_mailbox_it_acts_as(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    make_user: MakeUser,
    options: ConnectOptions,
    tmp_path: Path,
) -> None:
    email = f"migrator@{tmp_path.name[-12:].lower()}.iam.gserviceaccount.com"
    key_file = oauth_server.add_service_account(email, tmp_path)
    config = OAuthConfig(ProviderKind.GOOGLE, secret=Secret(key_file.read_text()))
    tokens = tokens_for(config, options)
    alice, bob = make_user(server=dovecot_oauth), make_user(server=dovecot_oauth)

    log_in(dovecot_oauth, alice, tokens, options)
    log_in(dovecot_oauth, bob, tokens, options)
    log_in(dovecot_oauth, alice, tokens, options)  # the one kept for alice

    assert oauth_server.tokens_issued(email, subject=alice) == 1
    assert oauth_server.tokens_issued(email, subject=bob) == 1


def test_a_google_service_account_without_delegation_is_refused_saying_what_to_check(
    oauth_server: OAuthServer, options: ConnectOptions, tmp_path: Path
) -> None:
    email = f"nodwd@{tmp_path.name[-12:].lower()}.iam.gserviceaccount.com"
    key_file = oauth_server.add_service_account(email, tmp_path, roles=())
    oauth_server.revoke(email, consent=True)  # no domain-wide delegation for it
    config = OAuthConfig(ProviderKind.GOOGLE, secret=Secret(key_file.read_text()))

    with pytest.raises(TokenRefused, match="unauthorized_client") as raised:
        tokens_for(config, options).token("someone@example.test")
    said = str(raised.value)
    assert email in said and "someone@example.test" in said
    assert "domain-wide delegation" in said and "https://mail.google.com/" in said


def _certificate(tmp_path: Path, stem: str = "app") -> tuple[Path, bytes]:
    """A self-signed certificate and its key in one PEM file, as --oauth-certificate takes
    them; and the certificate alone, as the app registration holds it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "migrator test app")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = tmp_path / f"{stem}.pem"
    path.write_bytes(key_pem + cert_pem)
    path.chmod(0o600)
    return path, cert_pem


def test_an_entra_id_app_proves_its_certificate_and_its_token_logs_in(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    make_user: MakeUser,
    options: ConnectOptions,
    tmp_path: Path,
) -> None:
    pem, cert_pem = _certificate(tmp_path)
    client_id = f"cert-app-{tmp_path.name[-8:]}"
    oauth_server.add_app(client_id, certificate_pem=cert_pem)
    config = OAuthConfig(
        ProviderKind.MICROSOFT,
        tenant=TENANT,
        client_id=client_id,
        authority=oauth_server.authority,
        certificate=str(pem),
    )
    user = make_user(server=dovecot_oauth)

    log_in(dovecot_oauth, user, tokens_for(config, options), options)

    assert oauth_server.tokens_issued(client_id) == 1


def test_an_entra_id_app_with_another_certificate_is_refused(
    oauth_server: OAuthServer, options: ConnectOptions, tmp_path: Path
) -> None:
    pem, _ = _certificate(tmp_path)
    _, registered = _certificate(tmp_path, "another")  # another key pair
    client_id = f"wrong-cert-{tmp_path.name[-8:]}"
    oauth_server.add_app(client_id, certificate_pem=registered)
    config = OAuthConfig(
        ProviderKind.MICROSOFT,
        tenant=TENANT,
        client_id=client_id,
        authority=oauth_server.authority,
        certificate=str(pem),
    )
    with pytest.raises(TokenRefused, match="AADSTS700027"):
        tokens_for(config, options).token("anyone@example.test")


def test_a_token_file_and_a_token_command_hand_on_tokens_another_tool_got(
    dovecot_oauth: DovecotServer,
    oauth_server: OAuthServer,
    make_user: MakeUser,
    options: ConnectOptions,
    tmp_path: Path,
) -> None:
    # Another tool holds the app's credentials and keeps a token per user in a file.
    app_tokens = tokens_for(app_config(oauth_server, *new_app(oauth_server, tmp_path)), options)
    user = make_user(server=dovecot_oauth)
    token_dir = tmp_path / "tokens"
    token_dir.mkdir(mode=0o700)
    (token_dir / f"{user}.token").write_text(app_tokens.token(user).reveal() + "\n")
    # Named so that the fault suite's scan of logs and data files (.json among them) passes
    # over it: a token file holds a token on purpose.
    (token_dir / f"{user}.json-token").write_text(
        json.dumps({"access_token": app_tokens.token(user).reveal(), "expires_in": 15})
    )
    file_config = OAuthConfig(ProviderKind.FILE, token_file=str(token_dir / "{user}.token"))
    script = "import sys; print(open(sys.argv[1] + '/' + sys.argv[2] + '.json-token').read())"
    command = shlex.join([sys.executable, "-c", script, str(token_dir)])
    command_config = OAuthConfig(ProviderKind.COMMAND, command=command)

    from_file = tokens_for(file_config, options)
    log_in(dovecot_oauth, user, from_file, options)
    log_in(dovecot_oauth, user, from_file, options)
    from_command = tokens_for(command_config, options)
    log_in(dovecot_oauth, user, from_command, options)
    log_in(dovecot_oauth, user, from_command, options)

    assert from_file.fetched == 2  # read again at every login: the file may have changed
    assert from_command.fetched == 1  # kept while its expires_in says it is fresh
    with pytest.raises(TokenRefused, match="cannot be read"):
        from_file.token("nobody@example.test")


def test_worker_processes_share_a_token_through_redis_sealed_and_only_while_it_lives(
    oauth_server: OAuthServer,
    redis_server: RedisServer,
    options: ConnectOptions,
    tmp_path: Path,
) -> None:
    client_id, secret_file = new_app(oauth_server, tmp_path)
    config = app_config(oauth_server, client_id, secret_file)
    store = StateStore.from_url(redis_server.url)
    key = new_key()

    def worker_tokens() -> Tokens:
        """A `Tokens` as another worker process makes it for the same app."""
        provider = make_provider(config, options)
        return Tokens(provider, config.describe(), shelf_key=config.cache_key())

    shared_before = set(store.client.keys("migrator:token:*"))  # other tests' apps
    share_tokens(store.token_shelf(), SecretBox(key))
    try:
        first, second = worker_tokens(), worker_tokens()
        token = first.token("alice@example.com")
        assert second.token("bob@example.com") == token  # an app-only token: found in Redis
        assert oauth_server.tokens_issued(client_id) == 1
        assert token.reveal().encode() not in redis_server.dump_rdb()
        (name,) = set(store.client.keys("migrator:token:*")) - shared_before
        assert 0 < store.client.pttl(name) <= oauth_server.lifetime * 1000

        # A refused token is not handed out again from Redis.
        renewed = second.renew("bob@example.com", token)
        assert renewed != token and oauth_server.tokens_issued(client_id) == 2

        # Workers with another batch key cannot open what is there: they ask for their own.
        share_tokens(store.token_shelf(), SecretBox(new_key()))
        assert worker_tokens().token("carol@example.com") not in (token, renewed)
        assert oauth_server.tokens_issued(client_id) == 3
    finally:
        share_tokens(None)

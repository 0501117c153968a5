"""An OAuth 2.0 authorization server of our own, over HTTPS on loopback, speaking the real
protocol to unchanged clients: msal (OpenID configuration document, client credentials
with a secret or a certificate's signed assertion), google-auth (the RFC 7523 JWT bearer
grant a service account signs), and Dovecot's oauth2 passdb (RFC 7662 introspection).

Tokens are opaque and live `lifetime` seconds (20 by default), so a copy of a few minutes
outlives several.  Apps and service accounts carry roles (Exchange's IMAP.AccessAsApp,
POP.AccessAsApp, or Google's mail scope), which introspection answers as the token's
scope: Dovecot refuses a token without the role it is configured for, as Exchange Online
refuses an app without the permission.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .certs import TlsFiles
from .ports import LOOPBACK

TENANT = "test-tenant"
DOMAIN = "example.test"  # the tenant's mail domain: Dovecot checks a token's domain
MAIL_ROLES = ("IMAP.AccessAsApp", "POP.AccessAsApp", "EWS.AccessAsApp")
GOOGLE_SCOPE = "https://mail.google.com/"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLIENT_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# The roles that open a mailbox over IMAP or POP; a token with one of them has the scope
# MAIL_SCOPE too, the one scope the test Dovecot asks for (its check takes one word).
MAILBOX_ROLES = frozenset({"IMAP.AccessAsApp", "POP.AccessAsApp", GOOGLE_SCOPE})
MAIL_SCOPE = "mail"

# Every token and client secret the server ever made, for the leak scans.
ISSUED_SECRETS: set[str] = set()
TOKEN_PREFIX = "at-"
# What every token it issues looks like (secrets.token_urlsafe(32): 43 characters).
TOKEN_PATTERN = re.compile(rb"at-[A-Za-z0-9_-]{43}")


@dataclass
class Client:
    client_id: str
    secret: str | None = None
    public_key: Any = None  # a certificate's, or a service account's
    roles: tuple[str, ...] = MAIL_ROLES
    consented: bool = True  # False: the tenant's admin took consent back


@dataclass
class Issued:
    token: str
    client_id: str
    subject: str | None  # a service account's mailbox; None for an app-only token
    roles: tuple[str, ...]
    issued_at: float
    expires_at: float
    revoked: bool = False


@dataclass
class Stats:
    token_requests: int = 0
    introspections: int = 0
    refused: list[str] = field(default_factory=list)
    accepted: set[int] = field(default_factory=set)  # which tokens (by issue order) were good


class OAuthServer:
    def __init__(self, tls: TlsFiles, *, lifetime: float = 20.0) -> None:
        self.lifetime = lifetime
        self._tls = tls
        self._lock = threading.Lock()
        self.clients: dict[str, Client] = {}
        self.issued: list[Issued] = []
        self.stats = Stats()
        self._httpd: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0

    # -- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{LOOPBACK}:{self.port}"

    @property
    def authority(self) -> str:
        """What msal is given (with the tenant appended, as --oauth-authority and tenant)."""
        return self.url

    @property
    def google_token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def introspection_url(self) -> str:
        return f"{self.url}/introspect"

    def _ms_token_url(self, tenant: str) -> str:
        return f"{self.url}/{tenant}/oauth2/v2.0/token"

    # -- registrations --------------------------------------------------------------------

    def add_app(
        self,
        client_id: str,
        *,
        secret: str | None = None,
        certificate_pem: bytes | None = None,
        roles: Iterable[str] = MAIL_ROLES,
    ) -> None:
        key = None
        if certificate_pem is not None:
            key = x509.load_pem_x509_certificate(certificate_pem).public_key()
        if secret:
            ISSUED_SECRETS.add(secret)
        with self._lock:
            self.clients[client_id] = Client(client_id, secret, key, tuple(roles))

    def add_service_account(
        self, email: str, directory: Path, *, roles: Iterable[str] = (GOOGLE_SCOPE,)
    ) -> Path:
        """A service account with domain-wide delegation; its JSON key file, as Google's
        console makes one (token_uri pointed at this server)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode("ascii")
        info = {
            "type": "service_account",
            "project_id": "migrator-tests",
            "private_key_id": secrets.token_hex(20),
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "token_uri": self.google_token_uri,
        }
        with self._lock:
            self.clients[email] = Client(email, None, key.public_key(), tuple(roles))
        path = directory / "service-account.json"
        path.write_text(json.dumps(info))
        path.chmod(0o600)
        return path

    def revoke(self, client_id: str, *, consent: bool = False) -> int:
        """Every token of `client_id` inactive from now on; with `consent`, no new ones
        either (an admin took the app's consent back).  How many were revoked."""
        with self._lock:
            count = 0
            for issued in self.issued:
                if issued.client_id == client_id and not issued.revoked:
                    issued.revoked = True
                    count += 1
            if consent:
                self.clients[client_id].consented = False
            return count

    def consent(self, client_id: str) -> None:
        """The tenant's admin consents to the app again: new tokens are issued."""
        with self._lock:
            self.clients[client_id].consented = True

    def tokens_accepted(self, client_id: str) -> int:
        """How many of `client_id`'s tokens a server found good (introspection)."""
        with self._lock:
            return sum(1 for n in self.stats.accepted if self.issued[n].client_id == client_id)

    def all_expired(self, client_id: str) -> bool:
        """Whether every token `client_id` was ever issued has run out by now."""
        now = time.time()
        with self._lock:
            return all(i.expires_at <= now for i in self.issued if i.client_id == client_id)

    def tokens_issued(self, client_id: str, subject: str | None = None) -> int:
        with self._lock:
            return sum(
                1
                for i in self.issued
                if i.client_id == client_id and (subject is None or i.subject == subject)
            )

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> OAuthServer:
        server = self

        class Handler(_Handler):
            oauth = server

        httpd = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        httpd.daemon_threads = True
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._tls.server_cert, self._tls.server_key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="oauth-server", daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until `start()` (which reopens the same port),
        and the connections clients keep alive are closed."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        with self._lock:
            open_connections, self._connections = self._connections, set()
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def __enter__(self) -> OAuthServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the protocol ---------------------------------------------------------------------

    def _issue(self, client: Client, subject: str | None) -> dict[str, Any]:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        ISSUED_SECRETS.add(token)
        now = time.time()
        with self._lock:
            self.issued.append(
                Issued(token, client.client_id, subject, client.roles, now, now + self.lifetime)
            )
        return {"token_type": "Bearer", "expires_in": int(self.lifetime), "access_token": token}

    def client_credentials(self, tenant: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """RFC 6749 section 4.4, as Entra ID answers it (AADSTS codes in the description)."""
        client = self.clients.get(form.get("client_id", ""))
        if tenant != TENANT:
            return 400, _error("invalid_request", f"AADSTS90002: Tenant '{tenant}' not found.")
        if client is None:
            return 400, _error(
                "unauthorized_client", "AADSTS700016: Application not found in the directory."
            )
        if form.get("client_assertion_type") == CLIENT_ASSERTION:
            try:
                jwt.decode(
                    form.get("client_assertion", ""),
                    client.public_key,
                    algorithms=["RS256", "PS256"],
                    audience=self._ms_token_url(tenant),
                    issuer=client.client_id,
                )
            except (jwt.PyJWTError, TypeError, ValueError):
                return 401, _error(
                    "invalid_client", "AADSTS700027: Client assertion failed signature validation."
                )
        elif not client.secret or form.get("client_secret") != client.secret:
            return 401, _error("invalid_client", "AADSTS7000215: Invalid client secret provided.")
        if not client.consented:
            return 400, _error(
                "invalid_grant", "AADSTS65001: The app needs admin consent in the tenant."
            )
        if form.get("grant_type") != "client_credentials":
            return 400, _error("unsupported_grant_type", "AADSTS70003: grant type not supported")
        return 200, self._issue(client, None)

    def jwt_bearer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """RFC 7523 section 2.1, as Google's token endpoint answers a service account."""
        if form.get("grant_type") != JWT_BEARER:
            return 400, _error("unsupported_grant_type", "Invalid grant_type")
        assertion = form.get("assertion", "")
        try:
            unverified = jwt.decode(assertion, options={"verify_signature": False})
            client = self.clients[unverified["iss"]]
            claims = jwt.decode(
                assertion,
                client.public_key,
                algorithms=["RS256"],
                # google-auth names Google's endpoint whatever the key file's token_uri says.
                audience=[self.google_token_uri, GOOGLE_TOKEN_AUDIENCE],
            )
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            return 400, _error("invalid_grant", "Invalid JWT Signature.")
        if not client.consented or GOOGLE_SCOPE not in claims.get("scope", "").split():
            return 401, _error(
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client "
                "not authorized for any of the scopes requested.",
            )
        return 200, self._issue(client, claims.get("sub"))

    def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662; `username` is the mailbox a delegated token acts as, or for an
        app-only token an address in the tenant's domain (Dovecot compares domains)."""
        now = time.time()
        with self._lock:
            self.stats.introspections += 1
            found = next((i for i in self.issued if i.token == token), None)
        if found is None or found.revoked or found.expires_at <= now:
            self.stats.refused.append("expired" if found and not found.revoked else "invalid")
            return {"active": False}
        with self._lock:
            self.stats.accepted.add(self.issued.index(found))
        return {
            "active": True,
            "username": found.subject or f"app-{found.client_id}@{DOMAIN}",
            "scope": " ".join(
                [*found.roles, *([MAIL_SCOPE] if MAILBOX_ROLES & set(found.roles) else [])]
            ),
            "client_id": found.client_id,
            "exp": int(found.expires_at),
        }

    def principal(self, token: str, role: str) -> str | None:
        """Who a token stands for where `role` is needed (an EWS server's check of an Entra
        ID token: its app's principal, or None if the token is not good or lacks the role)."""
        answer = self.introspect(token)
        if not answer["active"] or role not in answer["scope"].split():
            return None
        return str(answer["username"])

    def openid_configuration(self, tenant: str) -> dict[str, Any]:
        return {
            "issuer": f"{self.url}/{tenant}/v2.0",
            "authorization_endpoint": f"{self.url}/{tenant}/oauth2/v2.0/authorize",
            "token_endpoint": self._ms_token_url(tenant),
            "jwks_uri": f"{self.url}/{tenant}/discovery/v2.0/keys",
            "response_types_supported": ["code", "token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }


def _error(code: str, description: str) -> dict[str, Any]:
    return {"error": code, "error_description": description}


class _Handler(BaseHTTPRequestHandler):
    oauth: OAuthServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # request lines name no secret, but the tests need no access log

    def setup(self) -> None:
        super().setup()
        with self.oauth._lock:
            self.oauth._connections.add(self.connection)

    def finish(self) -> None:
        with self.oauth._lock:
            self.oauth._connections.discard(self.connection)
        super().finish()

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)

    def _form(self) -> dict[str, str]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def do_GET(self) -> None:
        parts = self.path.split("?")[0].strip("/").split("/")
        if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"]:
            if parts[0] != TENANT:
                self._send(
                    400, _error("invalid_tenant", f"AADSTS90002: Tenant '{parts[0]}' not found.")
                )
                return
            self._send(200, self.oauth.openid_configuration(parts[0]))
            return
        self._send(404, _error("not_found", self.path))

    def do_POST(self) -> None:
        form = self._form()
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts == ["introspect"]:
            self._send(200, self.oauth.introspect(form.get("token", "")))
            return
        self.oauth.stats.token_requests += 1
        if parts == ["token"]:
            self._send(*self.oauth.jwt_bearer(form))
        elif len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
            self._send(*self.oauth.client_credentials(parts[0], form))
        else:
            self._send(404, _error("not_found", self.path))

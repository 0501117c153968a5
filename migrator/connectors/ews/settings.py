"""Exchange Web Services settings: where a server is, how to log in and act for a
mailbox, and the command-line options that say so.  Accounts and calls are in
account.py, the extended properties migrations write in props.py.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrator.argtypes import CONNECTIONS
from migrator.errors import (
    ConfigError,
)
from migrator.mailboxid import canonical_url
from migrator.model import ConnectOptions, ServerAddress, TlsMode
from migrator.secrets import Secret

EWS_PATH = "/EWS/Exchange.asmx"

# --ews-version: the EWS API version to speak, skipping exchangelib's probe (a ConvertId
# call).  Exchange2016 covers 2016, 2019, SE and Exchange Online.  The builds as numbers
# (exchangelib's Build in account.py): the command line's options need no exchangelib.
VERSIONS = {
    "Exchange2013": (15, 0, 516, 32),
    "Exchange2013_SP1": (15, 0, 847, 32),
    "Exchange2016": (15, 1, 225, 42),
}


class EwsAuth(str, enum.Enum):  # noqa: UP042  (str, Enum) as the rest of migrator
    BASIC = "basic"
    NTLM = "ntlm"
    OAUTH = "oauth"  # OAuth 2.0 client credentials: tenant, client id, secret or certificate


class EwsAccess(str, enum.Enum):  # noqa: UP042
    DELEGATE = "delegate"  # the login is the mailbox itself, or holds full access on it
    IMPERSONATION = "impersonation"  # ExchangeImpersonation header: ApplicationImpersonation role


@dataclass(frozen=True)
class EwsSettings:
    """How to reach an Exchange server.  The login and password of each mailbox travel
    apart, as migrator Credentials (the admin's for a target, the row's for a source)."""

    endpoint: str | None  # https://host/EWS/Exchange.asmx; None: autodiscover per mailbox
    auth: EwsAuth = EwsAuth.BASIC
    access: EwsAccess = EwsAccess.DELEGATE
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    certificate: str | None = None  # PEM file: private key and certificate (OAuth)
    max_connections: int = 8  # per target endpoint, across every worker (Redis slots)
    version: str | None = None  # EWS API version (VERSIONS); None: exchangelib probes
    connect: ConnectOptions = field(default_factory=ConnectOptions)

    def slot_key(self) -> str:
        """Whose connection cap a mailbox counts against: the endpoint, or the tenant."""
        if self.endpoint:
            return "ews:" + canonical_url(self.endpoint)
        return f"ews:autodiscover:{self.tenant_id or self.client_id}"

    @property
    def secret(self) -> Secret | None:
        return self.client_secret

    def with_secret(self, secret: Secret | None) -> EwsSettings:
        return replace(self, client_secret=secret)

    def bound(self) -> dict[str, object]:
        """What the end's secrets are bound to: where they go, and as which client."""
        return {
            "endpoint": self.endpoint,
            "auth": self.auth.value,
            "client_id": self.client_id,
            "tenant_id": self.tenant_id,
        }

    def to_json(self) -> dict[str, Any]:
        """The payload form, without the client secret: migrator.payload seals that, bound
        to these settings."""
        return {
            "endpoint": self.endpoint,
            "auth": self.auth.value,
            "access": self.access.value,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "certificate": self.certificate,
            "max_connections": self.max_connections,
            "version": self.version,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], connect: ConnectOptions) -> EwsSettings:
        """Settings from their payload form, without the client secret (see to_json)."""
        return cls(
            endpoint=data.get("endpoint"),
            auth=EwsAuth(data.get("auth", "basic")),
            access=EwsAccess(data.get("access", "delegate")),
            tenant_id=data.get("tenant_id"),
            client_id=data.get("client_id"),
            certificate=data.get("certificate"),
            max_connections=int(data.get("max_connections", 8)),
            version=data.get("version"),
            connect=connect,
        )


def endpoint_url(text: str) -> str:
    """`host` or `host:port` -> https://host/EWS/Exchange.asmx; a full http(s) URL as given."""
    text = text.strip()
    if "://" in text:
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"EWS server {text!r}: expected a host or an http(s) URL")
        if "@" in parts.netloc:
            raise ConfigError("the EWS server address must not hold a user name or password")
        return text if parts.path not in ("", "/") else f"{text.rstrip('/')}{EWS_PATH}"
    if not text or any(c in text for c in "/?#@ "):
        raise ConfigError(f"EWS server {text!r}: expected a host or an http(s) URL")
    return f"https://{text}{EWS_PATH}"


def source_endpoint(server: ServerAddress) -> str:
    """The endpoint of a SourceServer cell (ews:// or https:// host, or http:// in tests)."""
    scheme = "https" if server.tls is TlsMode.IMPLICIT else "http"
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"{scheme}://{host}:{server.port}{EWS_PATH}"


def endpoint_address(endpoint: str | None) -> ServerAddress:
    """A ServerAddress naming the endpoint, for mailbox keys and status lines."""
    if endpoint is None:
        return ServerAddress("autodiscover", 443, TlsMode.IMPLICIT, protocol="ews")
    parts = urlsplit(endpoint)
    https = parts.scheme == "https"
    port = parts.port or (443 if https else 80)
    tls = TlsMode.IMPLICIT if https else TlsMode.STARTTLS
    return ServerAddress(parts.hostname or "", port, tls, protocol="ews")


# -- command line ---------------------------------------------------------------------


def add_ews_arguments(
    p: argparse.ArgumentParser, *, source: bool = True, target: bool = True
) -> None:
    """Options for `--target ews` and `--source-type ews` (those of the ends asked for)."""
    g = p.add_argument_group("Exchange (EWS)")
    if target:
        _target_arguments(g)
    if source:
        g.add_argument(
            "--source-ews-version",
            choices=sorted(VERSIONS),
            help="EWS API version of the source server (default: ask the server)",
        )
        g.add_argument(
            "--source-ews-auth",
            choices=[EwsAuth.BASIC.value, EwsAuth.NTLM.value],
            default="basic",
            help="how an EWS source logs in (proxyauth: the admin impersonates each mailbox)",
        )


def _target_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--autodiscover", action="store_true", help="find each target mailbox's EWS endpoint"
    )
    g.add_argument(
        "--ews-auth",
        choices=[a.value for a in EwsAuth],
        default="basic",
        help="how the service account logs in to Exchange (default basic)",
    )
    access = g.add_mutually_exclusive_group()
    access.add_argument(
        "--impersonate",
        action="store_true",
        help="the target admin impersonates each mailbox (ApplicationImpersonation)",
    )
    access.add_argument(
        "--delegate",
        action="store_true",
        help="the target admin opens each mailbox with full access rights (the default)",
    )
    g.add_argument("--ews-tenant", help="OAuth: the Microsoft tenant id")
    g.add_argument("--ews-client-id", help="OAuth: the application (client) id")
    g.add_argument(
        "--ews-client-secret-file", type=Path, help="OAuth: file holding the client secret"
    )
    g.add_argument(
        "--ews-certificate", type=Path, help="OAuth: PEM file with the private key and certificate"
    )
    g.add_argument(
        "--ews-version",
        choices=sorted(VERSIONS),
        help="EWS API version of the target server (default: ask the server)",
    )
    g.add_argument(
        "--target-max-connections",
        type=CONNECTIONS,
        default=8,
        help="mailboxes copied at once into one EWS endpoint (or tenant), across all workers",
    )


def target_settings(args: argparse.Namespace, connect: ConnectOptions) -> EwsSettings:
    """EwsSettings for `--target ews` from the parsed options."""
    auth = EwsAuth(args.ews_auth)
    if args.autodiscover == bool(args.target_server):
        raise ConfigError("--target ews needs --target-server or --autodiscover (not both)")
    secret = None
    if auth is EwsAuth.OAUTH:
        if not (args.ews_tenant and args.ews_client_id):
            raise ConfigError("--ews-auth oauth needs --ews-tenant and --ews-client-id")
        if bool(args.ews_client_secret_file) == bool(args.ews_certificate):
            raise ConfigError(
                "--ews-auth oauth needs --ews-client-secret-file or --ews-certificate (one)"
            )
        if args.ews_client_secret_file:
            try:
                text = args.ews_client_secret_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"client secret file: {exc.strerror}") from None
            secret = Secret(text.strip())
        if args.ews_certificate:
            load_certificate(args.ews_certificate)  # refuse a bad file now, not per mailbox
    endpoint = endpoint_url(args.target_server) if args.target_server else None
    if endpoint and endpoint.startswith("http://") and not connect.allow_plaintext:
        raise ConfigError(f"{endpoint} is not TLS: use https, or --allow-plaintext")
    return EwsSettings(
        endpoint=endpoint,
        auth=auth,
        access=EwsAccess.IMPERSONATION if args.impersonate else EwsAccess.DELEGATE,
        tenant_id=args.ews_tenant,
        client_id=args.ews_client_id,
        client_secret=secret,
        certificate=str(args.ews_certificate.resolve()) if args.ews_certificate else None,
        max_connections=args.target_max_connections,
        version=args.ews_version,
        connect=connect,
    )


def source_settings(args: argparse.Namespace, connect: ConnectOptions) -> EwsSettings:
    """EwsSettings for `--source-type ews`: the endpoint comes from each row's SourceServer,
    and the proxyauth method (admin for each user) means impersonation."""
    return EwsSettings(
        endpoint=None,
        auth=EwsAuth(args.source_ews_auth),
        access=EwsAccess.IMPERSONATION if args.method == "proxyauth" else EwsAccess.DELEGATE,
        version=args.source_ews_version,
        connect=connect,
    )


def load_certificate(path: str | Path) -> tuple[Any, bytes]:
    """(private key, DER certificate) from a PEM file; ConfigError if either is missing."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, load_pem_private_key

    try:
        data = Path(path).read_bytes()
        key = load_pem_private_key(data, password=None)
        cert = x509.load_pem_x509_certificate(data)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"certificate {path}: {exc}") from None
    return key, cert.public_bytes(Encoding.DER)

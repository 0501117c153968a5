"""Microsoft Graph settings: where Graph is, which Entra ID app acts for the mailboxes
(app-only tokens, the Graph scope), which API the messages go through, and the options
that say so.  One app serves every Graph end of a command (source and target alike)."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from migrator.errors import ConfigError
from migrator.model import ConnectOptions, ServerAddress, TlsMode
from migrator.oauth import OAuthConfig, ProviderKind
from migrator.oauth.config import GRAPH_SCOPE, MICROSOFT_AUTHORITY
from migrator.secrets import Secret

GRAPH_URL = "https://graph.microsoft.com"


class GraphApi(str, enum.Enum):  # noqa: UP042  (str, Enum) as the rest of migrator
    # importMime (beta): the message as delivered, its MIME whole.
    BETA = "beta"
    # JSON create (v1.0 only, for tenants that allow no beta call): see the README.
    V1 = "v1.0"


@dataclass(frozen=True)
class GraphSettings:
    url: str = GRAPH_URL  # https://graph.microsoft.com, a national cloud's, or a test's
    api: GraphApi = GraphApi.BETA
    tenant_id: str | None = None
    client_id: str | None = None
    authority: str = MICROSOFT_AUTHORITY
    certificate: str | None = None  # PEM: private key and certificate
    client_secret: Secret | None = None
    connect: ConnectOptions = field(default_factory=ConnectOptions)

    @property
    def secret(self) -> Secret | None:
        return self.client_secret

    def with_secret(self, secret: Secret | None) -> GraphSettings:
        return replace(self, client_secret=secret)

    def bound(self) -> dict[str, object]:
        """Where the client secret goes and as which app: a payload that points it
        elsewhere does not open."""
        return {
            "url": self.url,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "authority": self.authority,
            "certificate": self.certificate,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.bound(), "api": self.api.value}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], connect: ConnectOptions) -> GraphSettings:
        return cls(
            url=str(data.get("url") or GRAPH_URL),
            api=GraphApi(data.get("api", GraphApi.BETA.value)),
            tenant_id=data.get("tenant_id"),
            client_id=data.get("client_id"),
            authority=str(data.get("authority") or MICROSOFT_AUTHORITY),
            certificate=data.get("certificate"),
            connect=connect,
        )

    def oauth(self) -> OAuthConfig:
        """The app as migrator.oauth's Microsoft provider takes it, with Graph's scope."""
        return OAuthConfig(
            ProviderKind.MICROSOFT,
            tenant=self.tenant_id,
            client_id=self.client_id,
            authority=self.authority,
            certificate=self.certificate,
            scope=GRAPH_SCOPE,
            secret=self.client_secret,
        )

    def slot_key(self) -> str:
        return f"graph:{self.url}:{self.tenant_id}"


def graph_url(text: str | None) -> str:
    """`host`, `host:port` or an https:// URL -> the Graph root URL (no version)."""
    if not text:
        return GRAPH_URL
    text = text.strip().rstrip("/")
    if "://" not in text:
        text = f"https://{text}"
    parts = urlsplit(text)
    if parts.scheme != "https" or not parts.hostname or "@" in parts.netloc:
        raise ConfigError(f"Graph server {text!r}: expected a host or an https:// URL")
    if parts.path not in ("", "/"):
        raise ConfigError(f"Graph server {text!r}: give the root, without /v1.0 or /beta")
    return f"https://{parts.netloc}"


def url_address(url: str) -> ServerAddress:
    parts = urlsplit(url)
    return ServerAddress(parts.hostname or "", parts.port or 443, TlsMode.IMPLICIT, "graph")


def address_url(server: ServerAddress) -> str:
    host = f"[{server.host}]" if ":" in server.host else server.host
    return f"https://{host}:{server.port}"


def add_graph_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("Microsoft Graph (one Entra ID app for every Graph end)")
    g.add_argument("--graph-tenant", help="the Microsoft tenant id or domain")
    g.add_argument("--graph-client-id", help="the application (client) id")
    g.add_argument("--graph-client-secret-file", type=Path, help="file holding the client secret")
    g.add_argument(
        "--graph-certificate", type=Path, help="PEM file with the app's private key and certificate"
    )
    g.add_argument(
        "--graph-authority",
        default=MICROSOFT_AUTHORITY,
        help=f"the token authority (default {MICROSOFT_AUTHORITY})",
    )
    g.add_argument(
        "--graph-api",
        choices=[a.value for a in GraphApi],
        default=GraphApi.BETA.value,
        help="beta: importMime, the message as delivered (default); v1.0: JSON create, for "
        "tenants that allow no beta call (loses the raw MIME: see the README)",
    )


def graph_settings(
    args: argparse.Namespace, connect: ConnectOptions, url: str | None
) -> GraphSettings:
    if not (args.graph_tenant and args.graph_client_id):
        raise ConfigError("Microsoft Graph needs --graph-tenant and --graph-client-id")
    if bool(args.graph_client_secret_file) == bool(args.graph_certificate):
        raise ConfigError(
            "Microsoft Graph needs --graph-client-secret-file or --graph-certificate (one)"
        )
    secret = None
    if args.graph_client_secret_file:
        try:
            secret = Secret(args.graph_client_secret_file.read_text(encoding="utf-8").strip())
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise ConfigError(f"--graph-client-secret-file: {reason}") from None
    settings = GraphSettings(
        url=graph_url(url),
        api=GraphApi(args.graph_api),
        tenant_id=args.graph_tenant,
        client_id=args.graph_client_id,
        authority=args.graph_authority.rstrip("/"),
        certificate=str(args.graph_certificate.resolve()) if args.graph_certificate else None,
        client_secret=secret,
        connect=connect,
    )
    settings.oauth().check()
    return settings

"""How a job's end gets its tokens: the provider and its settings, carried in the job
payload with the one secret (a client secret, or a service account's key) sealed there
like a password."""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from migrator.errors import ConfigError
from migrator.secrets import Secret

# Entra ID's public cloud; national clouds have their own (login.microsoftonline.us, ...).
MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
# App-only access to Exchange Online's IMAP, POP and EWS (the app's roles decide which).
OUTLOOK_SCOPE = "https://outlook.office365.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
# Gmail's IMAP and POP accept this scope only.
GOOGLE_SCOPE = "https://mail.google.com/"


class ProviderKind(str, enum.Enum):  # noqa: UP042  (str, Enum) as the rest of migrator
    MICROSOFT = "microsoft"  # Entra ID app, client credentials (msal)
    GOOGLE = "google"  # service account with domain-wide delegation (google-auth)
    FILE = "file"  # a token file, read again at every connection
    COMMAND = "command"  # a command printing a token for the user it is given


@dataclass(frozen=True)
class OAuthConfig:
    """One provider's settings.  `secret` is the client secret (microsoft) or the service
    account's JSON key (google); it travels sealed, never in `to_json`."""

    provider: ProviderKind
    tenant: str | None = None  # microsoft
    client_id: str | None = None  # microsoft
    authority: str = MICROSOFT_AUTHORITY  # microsoft: national clouds, tests
    certificate: str | None = None  # microsoft: PEM file with private key and certificate
    scope: str | None = None  # None: the provider's default (default_scope)
    token_file: str | None = None  # file: a path, "{user}" in it for one file per user
    command: str | None = None  # command: run with the user; prints the token
    secret: Secret | None = None

    def default_scope(self) -> str:
        if self.provider is ProviderKind.GOOGLE:
            return GOOGLE_SCOPE
        return OUTLOOK_SCOPE

    @property
    def effective_scope(self) -> str:
        return self.scope or self.default_scope()

    def with_secret(self, secret: Secret | None) -> OAuthConfig:
        return replace(self, secret=secret)

    def check(self) -> None:
        """ConfigError naming what the provider lacks."""
        kind = self.provider
        if kind is ProviderKind.MICROSOFT:
            if not (self.tenant and self.client_id):
                raise ConfigError(
                    "--oauth-provider microsoft needs --oauth-tenant and --oauth-client-id"
                )
            if bool(self.secret) == bool(self.certificate):
                raise ConfigError(
                    "--oauth-provider microsoft needs --oauth-client-secret-file or "
                    "--oauth-certificate (one)"
                )
            if not self.authority.startswith("https://"):
                raise ConfigError(f"--oauth-authority {self.authority!r} is not an https:// URL")
        elif kind is ProviderKind.GOOGLE and not self.secret:
            raise ConfigError("--oauth-provider google needs --oauth-key-file")
        elif kind is ProviderKind.FILE and not self.token_file:
            raise ConfigError("--oauth-provider file needs --oauth-token-file")
        elif kind is ProviderKind.COMMAND and not self.command:
            raise ConfigError("--oauth-provider command needs --oauth-token-command")

    def to_json(self) -> dict[str, Any]:
        """The payload form, without the secret (the payload seals that)."""
        return {
            "provider": self.provider.value,
            "tenant": self.tenant,
            "client_id": self.client_id,
            "authority": self.authority,
            "certificate": self.certificate,
            "scope": self.scope,
            "token_file": self.token_file,
            "command": self.command,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> OAuthConfig:
        return cls(
            provider=ProviderKind(data["provider"]),
            tenant=data.get("tenant"),
            client_id=data.get("client_id"),
            authority=str(data.get("authority") or MICROSOFT_AUTHORITY),
            certificate=data.get("certificate"),
            scope=data.get("scope"),
            token_file=data.get("token_file"),
            command=data.get("command"),
        )

    def bound(self) -> dict[str, object]:
        """What the secret is bound to: everything that says where it is sent, and as whom
        (a payload pointing the client secret at another authority does not open)."""
        return self.to_json()

    def cache_key(self) -> str:
        """One `Tokens` per distinct configuration in a process (the secret's digest in it:
        two batches with two secrets for one app keep two)."""
        digest = ""
        if self.secret:
            digest = hashlib.sha256(self.secret.reveal().encode("utf-8")).hexdigest()
        return json.dumps([self.to_json(), digest], sort_keys=True)

    def describe(self) -> str:
        """The provider as an operator named it, for error messages (never the secret)."""
        if self.provider is ProviderKind.MICROSOFT:
            return f"Entra ID app {self.client_id} in tenant {self.tenant}"
        if self.provider is ProviderKind.GOOGLE:
            return "the Google service account"
        if self.provider is ProviderKind.FILE:
            return f"token file {self.token_file}"
        return "the token command"

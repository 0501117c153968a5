"""The command-line options of OAuth 2.0 logins: which side logs in with tokens, and the
one provider both sides take them from."""

from __future__ import annotations

import argparse
from pathlib import Path

from migrator.errors import ConfigError
from migrator.oauth.config import MICROSOFT_AUTHORITY, OAuthConfig, ProviderKind
from migrator.secrets import Secret

PASSWORD = "password"
OAUTH2 = "oauth2"


def add_oauth_arguments(p: argparse.ArgumentParser, side: str) -> None:
    """--source-auth or --target-auth; the source's (every command that reads a batch has
    it, and it comes first) brings the provider's options, one provider for both ends."""
    g = p.add_argument_group(f"OAuth 2.0 logins of the {side}s (IMAP, POP3, ManageSieve, EWS)")
    g.add_argument(
        f"--{side}-auth",
        choices=[PASSWORD, OAUTH2],
        default=PASSWORD,
        help=f"oauth2: the {side} mailboxes log in with a bearer token (SASL OAUTHBEARER "
        "or XOAUTH2), acting as "
        + (
            "each row's SourceLoginID (--method individual)"
            if side == "source"
            else "each TargetIdentity"
        ),
    )
    if side == "source":
        _provider_arguments(g)


def _provider_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--oauth-provider",
        choices=[k.value for k in ProviderKind],
        help="microsoft: an Entra ID app (client credentials); google: a service account with "
        "domain-wide delegation; file: a token file read at every login; command: a "
        "command printing a token for the user it is given",
    )
    g.add_argument("--oauth-tenant", help="microsoft: the tenant id or domain")
    g.add_argument("--oauth-client-id", help="microsoft: the application (client) id")
    g.add_argument(
        "--oauth-client-secret-file", type=Path, help="microsoft: file holding the client secret"
    )
    g.add_argument(
        "--oauth-certificate",
        type=Path,
        help="microsoft: PEM file with the app's private key and certificate",
    )
    g.add_argument(
        "--oauth-authority",
        default=MICROSOFT_AUTHORITY,
        help=f"microsoft: the authority (default {MICROSOFT_AUTHORITY}; national clouds "
        "have their own)",
    )
    g.add_argument(
        "--oauth-scope",
        help="the scope asked for (default: https://outlook.office365.com/.default for "
        "microsoft, https://mail.google.com/ for google)",
    )
    g.add_argument("--oauth-key-file", type=Path, help="google: the service account's JSON key")
    g.add_argument(
        "--oauth-token-file",
        help="file: the token file, read again at every login ({user} in the path: one per user)",
    )
    g.add_argument(
        "--oauth-token-command",
        help="command: run with the user as its last argument (or in place of {user}); "
        "prints the token, or JSON with access_token and expires_in",
    )


def oauth_config(args: argparse.Namespace, side: str) -> OAuthConfig | None:
    """The provider for `side` ("source" or "target"), or None where it logs in with a
    password; ConfigError for a provider that lacks what it needs."""
    if getattr(args, f"{side}_auth", PASSWORD) != OAUTH2:
        return None
    if not args.oauth_provider:
        raise ConfigError(f"--{side}-auth oauth2 needs --oauth-provider")
    provider = ProviderKind(args.oauth_provider)
    secret = None
    if provider is ProviderKind.MICROSOFT and args.oauth_client_secret_file:
        secret = _read_secret(args.oauth_client_secret_file, "--oauth-client-secret-file")
    if provider is ProviderKind.GOOGLE and args.oauth_key_file:
        secret = _read_secret(args.oauth_key_file, "--oauth-key-file")
    config = OAuthConfig(
        provider=provider,
        tenant=args.oauth_tenant,
        client_id=args.oauth_client_id,
        authority=args.oauth_authority.rstrip("/"),
        certificate=str(args.oauth_certificate.resolve()) if args.oauth_certificate else None,
        scope=args.oauth_scope,
        token_file=args.oauth_token_file,
        command=args.oauth_token_command,
        secret=secret,
    )
    config.check()
    return config


def _read_secret(path: Path, option: str) -> Secret:
    try:
        return Secret(path.read_text(encoding="utf-8").strip())
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"{option} {path}: {reason}") from None

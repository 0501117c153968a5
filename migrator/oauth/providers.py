"""The token services: Entra ID client credentials (msal), a Google service account with
domain-wide delegation (google-auth), a token file, a token command.  Each asks for a new
token at every `fetch`; `tokens.Tokens` decides when.  This is the one place where msal,
google-auth and requests errors become migrator's: TokenRefused when the service says no
(with its own words, which name what is missing), TokenServiceUnavailable when it cannot
be reached.  No token or secret is ever in a message.
"""

from __future__ import annotations

import calendar
import contextlib
import functools
import json
import logging
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from migrator.errors import ConfigError, PermanentError, TokenRefused, TokenServiceUnavailable
from migrator.model import ConnectOptions
from migrator.oauth.config import OAuthConfig, ProviderKind
from migrator.oauth.tokens import AccessToken, TokenProvider
from migrator.secrets import Secret, redact

# msal and google-auth log token requests and answers at DEBUG; none of that may reach a
# log (the Secrets are redacted anyway, but a token not yet wrapped is not).
for _name in ("msal", "google.auth", "google.oauth2", "urllib3.connectionpool"):
    logging.getLogger(_name).setLevel(logging.WARNING)

_MAX_TEXT = 300


def make_provider(config: OAuthConfig, connect: ConnectOptions) -> TokenProvider:
    config.check()
    if config.provider is ProviderKind.MICROSOFT:
        return MicrosoftProvider(config, connect)
    if config.provider is ProviderKind.GOOGLE:
        return GoogleProvider(config, connect)
    if config.provider is ProviderKind.FILE:
        return FileProvider(config)
    return CommandProvider(config, connect)


def _verify(connect: ConnectOptions) -> bool | str:
    """requests' `verify`: the operator's CA bundle, or no check with --insecure."""
    if connect.insecure:
        return False
    return connect.ca_file or True


def _session(connect: ConnectOptions) -> Any:
    """A requests Session that verifies as the operator said on every request.  A
    Session's own `verify` loses to REQUESTS_CA_BUNDLE in the environment; a request's
    does not, so --ca-file holds wherever the worker runs."""
    import requests

    session = requests.Session()
    session.request = functools.partial(  # type: ignore[method-assign]
        session.request, verify=_verify(connect), timeout=connect.timeout
    )
    return session


def _first_line(text: object) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else "no reason given"
    return redact(line)[:_MAX_TEXT]


@contextlib.contextmanager
def _http_errors(describe: str) -> Iterator[None]:
    """requests' errors on the way to a token service, as migrator's."""
    import requests

    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise PermanentError(
            f"{describe}: the token service's TLS certificate is not trusted "
            f"({_first_line(exc)}); give --ca-file"
        ) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise TokenServiceUnavailable(
            f"{describe}: the token service cannot be reached: {type(exc).__name__}"
        ) from None


class MicrosoftProvider:
    """App-only tokens from the Microsoft identity platform (client credentials, RFC 6749
    section 4.4), with a client secret or a certificate.  One token serves every mailbox:
    which mailboxes the app may open is Exchange's to say."""

    def __init__(self, config: OAuthConfig, connect: ConnectOptions) -> None:
        self._config = config
        self._connect = connect
        self._describe = config.describe()
        self._lock = threading.Lock()
        self._app: Any = None

    def cache_key(self, user: str) -> str:
        return ""

    def _application(self) -> Any:
        import msal

        if self._app is None:
            config = self._config
            credential: Any
            if config.certificate:
                credential = _certificate_credential(config.certificate)
            else:
                credential = config.secret.reveal() if config.secret else ""
            self._app = msal.ConfidentialClientApplication(
                config.client_id,
                client_credential=credential,
                authority=f"{config.authority.rstrip('/')}/{config.tenant}",
                # The operator names the authority (a national cloud's, or a test's):
                # no lookup of it at login.microsoftonline.com.
                instance_discovery=False,
                http_client=_session(self._connect),
                token_cache=msal.TokenCache(),
            )
        return self._app

    def fetch(self, user: str) -> AccessToken:
        scope = self._config.effective_scope
        now = time.time()
        with self._lock, _http_errors(self._describe):
            try:
                app = self._application()
            except ValueError as exc:  # msal: the authority's OpenID document refused
                raise TokenRefused(
                    f"{self._describe}: the authority does not know the tenant: {_first_line(exc)}"
                ) from None
            # Our Tokens decide when a token is due: msal must not hand back the one a
            # server has just refused from its own cache.
            app.remove_tokens_for_client()
            result = app.acquire_token_for_client(scopes=[scope])
        if "access_token" in result:
            token = Secret(str(result.pop("access_token")))
            return AccessToken(token, now + float(result.get("expires_in", 0)), now)
        error = result.get("error", "error")
        description = _first_line(result.get("error_description", ""))
        with self._lock:
            # msal keeps an HTTP 400 answer for 60 s and gives it again without asking: once
            # the admin has granted what was missing, a rerun must ask the service anew.
            # Each mailbox asks once before it fails, so no loop hammers the service.
            self._app = None
        raise TokenRefused(f"{self._describe} got no token for {scope}: {error}: {description}")


def _certificate_credential(path: str) -> dict[str, str]:
    """msal's form of a certificate credential from a PEM file holding the private key and
    the certificate (msal sends the certificate's SHA-256 thumbprint)."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--oauth-certificate {path}: {exc}") from None
    key_start = text.find("-----BEGIN PRIVATE KEY-----")
    if key_start < 0:
        key_start = text.find("-----BEGIN RSA PRIVATE KEY-----")
    cert_start = text.find("-----BEGIN CERTIFICATE-----")
    if key_start < 0 or cert_start < 0:
        raise ConfigError(
            f"--oauth-certificate {path}: needs a private key and a certificate (PEM)"
        )
    key_end = text.find("-----", text.find("-----END", key_start) + 8) + 5
    cert_end = text.find("-----", text.find("-----END", cert_start) + 8) + 5
    return {
        "private_key": text[key_start:key_end],
        "public_certificate": text[cert_start:cert_end],
    }


class GoogleProvider:
    """Tokens from a Google service account with domain-wide delegation: a JWT signed with
    its key (RFC 7523 JWT bearer grant), `sub` the mailbox; one token per mailbox."""

    def __init__(self, config: OAuthConfig, connect: ConnectOptions) -> None:
        self._config = config
        self._connect = connect
        self._describe = config.describe()
        try:
            self._info = json.loads(config.secret.reveal() if config.secret else "")
            if not isinstance(self._info, dict) or "client_email" not in self._info:
                raise ValueError("no client_email")
        except ValueError:
            raise ConfigError("--oauth-key-file is not a service account's JSON key") from None
        self._describe = f"Google service account {self._info['client_email']}"

    def cache_key(self, user: str) -> str:
        return user.lower()

    def fetch(self, user: str) -> AccessToken:
        from google.auth import exceptions as google_errors
        from google.auth.transport.requests import Request
        from google.oauth2 import service_account

        scope = self._config.effective_scope
        now = time.time()
        session = _session(self._connect)
        try:
            credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                self._info, scopes=[scope], subject=user
            )
            with _http_errors(self._describe):
                credentials.refresh(Request(session))
        except google_errors.RefreshError as exc:
            message = exc.args[0] if exc.args else exc
            raise TokenRefused(
                f"{self._describe} got no token for {user} ({scope}): {_first_line(message)}; "
                "check its domain-wide delegation in the Google Admin console (its client "
                f"id, with the scope {scope}) and that {user} is in the domain"
            ) from None
        except google_errors.TransportError:
            raise TokenServiceUnavailable(
                f"{self._describe}: the token service cannot be reached"
            ) from None
        except ValueError as exc:  # a key google-auth cannot read
            raise ConfigError(f"{self._describe}: the key cannot be used: {exc}") from None
        finally:
            session.close()
        expiry = credentials.expiry  # naive, in UTC
        expires_at = float(calendar.timegm(expiry.utctimetuple())) if expiry else None
        return AccessToken(Secret(str(credentials.token)), expires_at, now)


def _read_token(text: str, where: str) -> tuple[Secret, float | None]:
    """A token as a file or a command gives it: the token alone on its first line, or a
    JSON object with access_token (and expires_in or expires_at, epoch seconds)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
            token = Secret(str(data["access_token"]))
        except (ValueError, KeyError, TypeError):
            raise TokenRefused(f"{where}: not a token, nor JSON with access_token") from None
        if "expires_at" in data:
            return token, float(data["expires_at"])
        if "expires_in" in data:
            return token, time.time() + float(data["expires_in"])
        return token, None
    lines = stripped.splitlines()
    if not lines or not lines[0].strip():
        raise TokenRefused(f"{where}: empty, no token")
    return Secret(lines[0].strip()), None


class FileProvider:
    """A token file that something else keeps current: read again at every connection
    (never kept), so a long run picks up each token the refresher writes."""

    def __init__(self, config: OAuthConfig) -> None:
        self._template = config.token_file or ""

    def cache_key(self, user: str) -> str:
        return user.lower()

    def fetch(self, user: str) -> AccessToken:
        path = self._template.replace("{user}", user)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise TokenRefused(f"token file {path}: cannot be read: {reason}") from None
        now = time.time()
        token, _ = _read_token(text, f"token file {path}")
        return AccessToken(token, None, now)  # read again next time, whatever it says


class CommandProvider:
    """A command that prints a token for the user it is given (as its last argument, or
    where "{user}" stands in it)."""

    def __init__(self, config: OAuthConfig, connect: ConnectOptions) -> None:
        self._command = config.command or ""
        self._timeout = connect.timeout

    def cache_key(self, user: str) -> str:
        return user.lower()

    def fetch(self, user: str) -> AccessToken:
        argv = shlex.split(self._command)
        if any("{user}" in part for part in argv):
            argv = [part.replace("{user}", user) for part in argv]
        else:
            argv.append(user)
        now = time.time()
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self._timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TokenServiceUnavailable(
                f"the token command took longer than {self._timeout:g}s for {user}"
            ) from None
        except OSError as exc:
            raise TokenRefused(f"the token command cannot run: {exc.strerror}") from None
        output = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            said = _first_line(done.stderr.decode("utf-8", "replace") or "")
            raise TokenRefused(
                f"the token command exited with {done.returncode} for {user}: {said}"
            )
        token, expires_at = _read_token(output, "the token command's output")
        return AccessToken(token, expires_at, now)

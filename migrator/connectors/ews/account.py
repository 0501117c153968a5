"""exchangelib Accounts for both sides, and the one place where exchangelib and requests
errors become migrator errors.

exchangelib appears in this package only (here, props.py and the adapters).  Every
call to the server goes through `ews_call`, which honours ErrorServerBusy's BackOffMilliseconds (the
server refused the whole call, so sending it again is safe) and translates everything else.
exchangelib's own retrying is off (FailFast): it would re-send a request whose connection
dropped after the server had stored the items, and duplicate them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
import urllib3
from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    NTLM,
    OAUTH2,
    Account,
    Build,
    Configuration,
    Identity,
    OAuth2AuthorizationCodeCredentials,
    Version,
)
from exchangelib import UTC as EWS_UTC
from exchangelib import Credentials as ExchangeCredentials
from exchangelib import errors as ews
from exchangelib.protocol import BaseProtocol, FailFast, close_connections

from migrator.connectors.ews.settings import (
    VERSIONS,
    EwsAccess,
    EwsAuth,
    EwsSettings,
    load_certificate,
)
from migrator.errors import (
    ConfigError,
    ErrorCode,
    FolderRefused,
    LoginFailed,
    MailboxNotReady,
    MessageRefused,
    MigrationError,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.model import ConnectOptions, Login, TokenLogin
from migrator.oauth import OAuthConfig, ProviderKind, tokens_for

# exchangelib logs every request and answer whole, at DEBUG and again at ERROR when a request
# fails in a way it did not foresee: the MimeContent (message bodies) and the Authorization
# header (a Basic password, in base64).  None of that may reach a log at any level; our own
# errors say what went wrong.  The OAuth libraries log token requests, client secret
# included, at DEBUG.
logging.getLogger("exchangelib").setLevel(logging.INFO)
logging.getLogger("exchangelib.util").setLevel(logging.CRITICAL + 1)
for _name in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.INFO)

# -- accounts -------------------------------------------------------------------------


def open_account(
    settings: EwsSettings, smtp: str, credentials: Login | None, *, what: str
) -> Account:
    """An exchangelib Account for mailbox `smtp`; nothing is sent to the server yet."""
    _configure_tls(settings.connect, settings.endpoint)
    endpoint = settings.endpoint
    if endpoint and endpoint.startswith("http://") and not settings.connect.allow_plaintext:
        raise PermanentError(
            f"{what}: {endpoint} is not TLS; allow plaintext explicitly", code=ErrorCode.NOTLS
        )
    bearer = isinstance(credentials, TokenLogin) or settings.auth is EwsAuth.OAUTH
    if bearer and endpoint and endpoint.startswith("http://"):
        # RFC 6750 section 5.3: a bearer token goes over TLS only (requests-oauthlib
        # refuses otherwise, with an error no one could act on).
        raise PermanentError(
            f"{what}: {endpoint} is not TLS: OAuth 2.0 tokens go to https:// only",
            code=ErrorCode.NOTLS,
        )
    creds: Any
    if isinstance(credentials, TokenLogin):
        # --source-auth/--target-auth oauth2: a token from migrator.oauth's providers.
        creds = ProviderCredentials(credentials, Identity(primary_smtp_address=smtp))
        auth_type = OAUTH2
    elif settings.auth is EwsAuth.OAUTH:
        creds = _oauth_credentials(settings, smtp)
        auth_type = OAUTH2
    else:
        if credentials is None:
            raise ConfigError(f"{what}: no login for {settings.auth.value} authentication")
        password = credentials.password.reveal()
        # RFC 7617: Basic credentials in UTF-8.  Given a str, requests encodes it as
        # Latin-1, and fails on anything outside it with the password in the error.
        # NTLM hashes the password as UTF-16 itself: any character works.
        sent = password.encode("utf-8") if settings.auth is EwsAuth.BASIC else password
        creds = ExchangeCredentials(credentials.login, sent)
        auth_type = NTLM if settings.auth is EwsAuth.NTLM else BASIC
    access = IMPERSONATION if settings.access is EwsAccess.IMPERSONATION else DELEGATE
    with ews_errors(what):
        config = Configuration(
            service_endpoint=endpoint,
            credentials=creds,
            auth_type=auth_type if endpoint else None,
            retry_policy=FailFast(),
            max_connections=settings.max_connections,
            version=Version(build=Build(*VERSIONS[settings.version])) if settings.version else None,
        )
        return Account(
            primary_smtp_address=smtp,
            config=config,
            autodiscover=endpoint is None,
            access_type=access,
            default_timezone=EWS_UTC,
        )


_tls_lock = threading.Lock()
# What requests' `verify` is for each origin (host, port) an account was opened for: a CA
# file, or False for --insecure; None: the default check.  The key None stands for any
# other origin (autodiscover's, which are not known beforehand).
_verify: dict[tuple[str, int] | None, str | bool | None] = {}


def _origin(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


# exchangelib parses every SOAP response from `response.iter_content()`, whose chunk is one
# byte unless told otherwise, and its reader joins the chunks into a bytearray it slices
# again at every read: about 1.5 s per MB of MIME.  Responses of our adapter hand out this
# much at a time instead (exchangelib 5.x; pinned below 6 in pyproject.toml).
RESPONSE_CHUNK = 256 * 1024


class _WholeChunks(requests.Response):
    def iter_content(
        self, chunk_size: int | None = 1, decode_unicode: bool = False
    ) -> Iterator[Any]:
        """exchangelib asks for bytes (decode_unicode False), one at a time by default."""
        size = RESPONSE_CHUNK if chunk_size == 1 else chunk_size
        if decode_unicode:
            return iter(super().iter_content(size, decode_unicode=True))
        return iter(super().iter_content(size))


class _Adapter(requests.adapters.HTTPAdapter):
    """exchangelib takes its HTTP adapter from one class attribute for the whole process (its
    documented way to trust a private CA or skip checks); this one looks up each request's
    origin, so one batch's --ca-file or --insecure never applies to another's servers, and
    its responses are read in large chunks (RESPONSE_CHUNK)."""

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        with _tls_lock:
            chosen = _verify.get(_origin(url), _verify.get(None))
        super().cert_verify(conn, url, verify if chosen is None else chosen, cert)

    def build_response(self, req: Any, resp: Any) -> requests.Response:
        response = super().build_response(req, resp)
        response.__class__ = _WholeChunks
        return response


def _configure_tls(options: ConnectOptions, endpoint: str | None) -> None:
    verify: str | bool | None = False if options.insecure else options.ca_file
    key = _origin(endpoint) if endpoint else None
    with _tls_lock:
        BaseProtocol.HTTP_ADAPTER_CLS = _Adapter
        changed = key in _verify and _verify[key] != verify
        _verify[key] = verify
    if changed:
        # Pooled connections were set up under the other choice: start again.
        close_connections()
    if options.insecure:
        # Asked for, and shown in every status table; not a warning on every request.
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


class ProviderCredentials(OAuth2AuthorizationCodeCredentials):  # type: ignore[misc]
    """A bearer token from migrator.oauth instead of exchangelib's own fetching: exchangelib
    sends the token it holds, and asks `refresh` for another when the session finds it
    expired (each new session, each pass, asks the provider's Tokens again)."""

    def __init__(self, login: TokenLogin, identity: Any) -> None:
        self._login = login
        self._token = login.tokens.token(login.login)
        super().__init__(identity=identity, access_token=_token_dict(self._token))

    def refresh(self, session: Any) -> None:
        self._token = self._login.tokens.renew(self._login.login, self._token)
        self.access_token = _token_dict(self._token)

    def __repr__(self) -> str:
        return f"ProviderCredentials({self._login.login!r}, '********')"


def _token_dict(token: Any) -> dict[str, str]:
    return {"access_token": token.reveal(), "token_type": "Bearer"}


def _oauth_credentials(settings: EwsSettings, smtp: str) -> Any:
    """--ews-auth oauth: the app's token from the Microsoft provider of migrator.oauth, as
    every other OAuth login gets it (renewed before it expires, shared by the mailboxes)."""
    config = OAuthConfig(
        ProviderKind.MICROSOFT,
        tenant=settings.tenant_id,
        client_id=settings.client_id,
        certificate=settings.certificate,
        secret=settings.client_secret,
    )
    login = TokenLogin(smtp, tokens_for(config, settings.connect))
    return ProviderCredentials(login, Identity(primary_smtp_address=smtp))


def client_assertion(certificate: str | Path, client_id: str, token_url: str) -> str:
    """A signed JWT (RFC 7523) proving the client holds the certificate's private key,
    as Entra ID's certificate credentials expect: RS256, x5t = SHA-1 of the certificate."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    key, der = load_certificate(certificate)
    now = int(time.time())
    header = {"alg": "RS256", "typ": "JWT", "x5t": _b64(hashlib.sha1(der).digest())}  # noqa: S324
    claims = {
        "aud": token_url,
        "iss": client_id,
        "sub": client_id,
        "jti": str(uuid.uuid4()),
        "nbf": now,
        "exp": now + 600,
    }
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# -- errors ---------------------------------------------------------------------------

# exchangelib's errors by kind, each with the code it gets; the first row that matches wins.
# Transient ones are errors a later pass may not meet: the server or the network had a bad
# moment.  "Not ready": the mailbox cannot be opened at all ("not ready to migrate").
_KINDS: tuple[tuple[tuple[type[Exception], ...], type[MigrationError], ErrorCode], ...] = (
    ((ews.UnauthorizedError,), LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
    ((ews.ErrorQuotaExceeded,), QuotaExceeded, ErrorCode.OVERQUOTA),
    ((ews.ErrorMessageSizeExceeded,), MessageRefused, ErrorCode.LIMIT),
    (
        (
            ews.ErrorMimeContentConversionFailed,
            ews.ErrorCorruptData,
            ews.ErrorItemCorrupt,
            ews.ErrorItemSave,
        ),
        MessageRefused,
        ErrorCode.REFUSED,
    ),
    ((ews.ErrorNonExistentMailbox, ews.AutoDiscoverFailed), MailboxNotReady, ErrorCode.NOTREADY),
    (
        (
            ews.ErrorImpersonateUserDenied,
            ews.ErrorImpersonationDenied,
            ews.ErrorImpersonationFailed,
            ews.ErrorAccessDenied,
        ),
        MailboxNotReady,
        ErrorCode.AUTHORIZATIONFAILED,
    ),
    ((ews.ErrorFolderNotFound,), FolderRefused, ErrorCode.NONEXISTENT),
    ((ews.ErrorFolderExists,), FolderRefused, ErrorCode.ALREADYEXISTS),
    ((ews.ErrorServerBusy, ews.RateLimitError), TransientError, ErrorCode.THROTTLED),
    (
        (
            ews.ErrorTimeoutExpired,
            ews.ErrorInternalServerTransientError,
            ews.ErrorConnectionFailed,
            ews.ErrorConnectionFailedTransientError,
            ews.ErrorMailboxStoreUnavailable,
            ews.ErrorMailboxMoveInProgress,
            ews.ErrorBatchProcessingStopped,
        ),
        TransientError,
        ErrorCode.UNAVAILABLE,
    ),
    # A response code no row above knows: retrying the same request will not help.
    ((ews.ResponseMessageError,), PermanentError, ErrorCode.REFUSED),
)


# OpenSSL's words, which exchangelib keeps only as text (TransportError(str(SSLError))).
_CERTIFICATE_FAILED = re.compile(r"certificate verify failed: ([^()'\"]+)")


def translate(exc: BaseException, what: str) -> MigrationError:
    """The migrator error, with its code, for an exchangelib/requests error (its server
    text kept): the one place where they become ours."""
    if isinstance(exc, PermanentError | TransientError | ConfigError):
        return exc
    text = str(exc)[:300]
    for types, kind, code in _KINDS:
        if isinstance(exc, types):
            if kind is LoginFailed:
                return LoginFailed(f"{what}: login refused: {text}", code=code)
            if kind is QuotaExceeded:
                return QuotaExceeded(f"{what}: target is over quota: {text}", code=code)
            return kind(f"{what}: {type(exc).__name__}: {text}", code=code)
    transport = isinstance(exc, ews.TransportError | requests.RequestException | OSError)
    untrusted = _CERTIFICATE_FAILED.search(str(exc))
    if untrusted and transport:
        # Retrying cannot make an untrusted certificate trusted.
        return PermanentError(
            f"{what}: TLS certificate not trusted: {untrusted.group(1).strip()}; "
            "give --ca-file, or --insecure to skip the check",
            code=ErrorCode.CERTIFICATE,
        )
    if transport:
        # exchangelib does not retry a dropped connection on its own (FailFast).
        refused = isinstance(exc, ConnectionRefusedError)
        return TransientError(
            f"{what}: connection lost: {type(exc).__name__}: {text}",
            code=ErrorCode.CONNREFUSED if refused else ErrorCode.CONNECTION,
        )
    if isinstance(exc, ews.EWSError):
        return PermanentError(f"{what}: {type(exc).__name__}: {text}", code=ErrorCode.REFUSED)
    raise exc


@contextmanager
def ews_errors(what: str) -> Iterator[None]:
    """Translate exchangelib/requests errors raised inside into migrator errors."""
    try:
        yield
    except (ews.EWSError, requests.RequestException, OSError) as exc:
        raise translate(exc, what) from exc


T = TypeVar("T")

# How long ErrorServerBusy may hold one call back before the pass gives up (and the
# copier's next pass, after its own wait, starts again from the checkpoints).
MAX_BUSY_WAIT = timedelta(minutes=5)
DEFAULT_BACK_OFF = 1.0  # seconds, when the server names none


def ews_call(what: str, call: Callable[[], T], *, sleep: Callable[[float], None] = time.sleep) -> T:
    """Run `call` (which must do all its I/O: materialise querysets inside), waiting out
    ErrorServerBusy as often as it says within MAX_BUSY_WAIT; other errors translated."""
    waited = 0.0
    while True:
        with ews_errors(what):
            try:
                return call()
            except ews.ErrorServerBusy as exc:
                # The server refused the whole call before doing anything: same call again.
                back_off = float(exc.back_off or DEFAULT_BACK_OFF)
                if waited + back_off > MAX_BUSY_WAIT.total_seconds():
                    raise
        sleep(back_off)
        waited += back_off

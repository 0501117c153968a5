"""Exchange Web Services connections for both sides: settings, exchangelib Accounts, the
extended properties migrations write, and the one place where exchangelib and requests
errors become migrator errors.

exchangelib appears here and in the two EWS adapters only.  Every call to the server goes
through `ews_call`, which honours ErrorServerBusy's BackOffMilliseconds (the server
refused the whole call, so sending it again is safe) and translates everything else.
exchangelib's own retrying is off (FailFast): it would re-send a request whose connection
dropped after the server had stored the items, and duplicate them.
"""

from __future__ import annotations

import argparse
import base64
import enum
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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
    EWSDateTime,
    ExtendedProperty,
    Identity,
    Message,
    OAuth2Credentials,
    Version,
)
from exchangelib import UTC as EWS_UTC
from exchangelib import Credentials as ExchangeCredentials
from exchangelib import errors as ews
from exchangelib.protocol import BaseProtocol, FailFast, close_connections

from migrator.batch import Credentials, ServerAddress, TlsMode
from migrator.errors import (
    ConfigError,
    FolderRefused,
    LoginFailed,
    MailboxNotReady,
    MessageRefused,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.imapconn import ConnectOptions
from migrator.plan import MessageKey
from migrator.secrets import Secret, SecretBox

EWS_PATH = "/EWS/Exchange.asmx"

# exchangelib logs every request and answer whole, at DEBUG and again at ERROR when a request
# fails in a way it did not foresee: the MimeContent (message bodies) and the Authorization
# header (a Basic password, in base64).  None of that may reach a log at any level; our own
# errors say what went wrong.  The OAuth libraries log token requests, client secret
# included, at DEBUG.
logging.getLogger("exchangelib").setLevel(logging.INFO)
logging.getLogger("exchangelib.util").setLevel(logging.CRITICAL + 1)
for _name in ("requests_oauthlib", "oauthlib"):
    logging.getLogger(_name).setLevel(logging.INFO)

# --ews-version: the EWS API version to speak, skipping exchangelib's probe (a ConvertId
# call).  Exchange2016 covers 2016, 2019, SE and Exchange Online.
VERSIONS = {
    "Exchange2013": Build(15, 0, 516, 32),
    "Exchange2013_SP1": Build(15, 0, 847, 32),
    "Exchange2016": Build(15, 1, 225, 42),
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
        return "ews:" + (self.endpoint or f"autodiscover:{self.tenant_id or self.client_id}")

    def to_json(self, box: SecretBox) -> dict[str, Any]:
        """The payload form: the client secret sealed, as every password."""
        return {
            "endpoint": self.endpoint,
            "auth": self.auth.value,
            "access": self.access.value,
            "tenant_id": self.tenant_id,
            "client_id": self.client_id,
            "client_secret": box.seal(self.client_secret) if self.client_secret else None,
            "certificate": self.certificate,
            "max_connections": self.max_connections,
            "version": self.version,
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], box: SecretBox, connect: ConnectOptions
    ) -> EwsSettings:
        secret = data.get("client_secret")
        return cls(
            endpoint=data.get("endpoint"),
            auth=EwsAuth(data.get("auth", "basic")),
            access=EwsAccess(data.get("access", "delegate")),
            tenant_id=data.get("tenant_id"),
            client_id=data.get("client_id"),
            client_secret=box.open(secret) if secret else None,
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


def add_ews_arguments(p: argparse.ArgumentParser) -> None:
    """Options for `--target ews` and `--source-type ews`."""
    g = p.add_argument_group("Exchange (EWS)")
    g.add_argument(
        "--autodiscover", action="store_true", help="find each target mailbox's EWS endpoint"
    )
    g.add_argument("--ews-auth", choices=[a.value for a in EwsAuth], default="basic")
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
    for option, end in (("--ews-version", "target"), ("--source-ews-version", "source")):
        g.add_argument(
            option,
            choices=sorted(VERSIONS),
            help=f"EWS API version of the {end} server (default: ask the server)",
        )
    g.add_argument(
        "--target-max-connections",
        type=int,
        default=8,
        help="mailboxes copied at once into one EWS endpoint (or tenant), across all workers",
    )
    g.add_argument(
        "--source-ews-auth",
        choices=[EwsAuth.BASIC.value, EwsAuth.NTLM.value],
        default="basic",
        help="how an EWS source logs in (proxyauth: the admin impersonates each mailbox)",
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


# -- accounts -------------------------------------------------------------------------


def open_account(
    settings: EwsSettings, smtp: str, credentials: Credentials | None, *, what: str
) -> Account:
    """An exchangelib Account for mailbox `smtp`; nothing is sent to the server yet."""
    _configure_tls(settings.connect, settings.endpoint)
    endpoint = settings.endpoint
    if endpoint and endpoint.startswith("http://") and not settings.connect.allow_plaintext:
        raise PermanentError(f"{what}: {endpoint} is not TLS; allow plaintext explicitly")
    if settings.auth is EwsAuth.OAUTH:
        creds: Any = _oauth_credentials(settings, smtp)
        auth_type = OAUTH2
    else:
        if credentials is None:
            raise ConfigError(f"{what}: no login for {settings.auth.value} authentication")
        creds = ExchangeCredentials(credentials.login, credentials.password.reveal())
        auth_type = NTLM if settings.auth is EwsAuth.NTLM else BASIC
    access = IMPERSONATION if settings.access is EwsAccess.IMPERSONATION else DELEGATE
    with ews_errors(what):
        config = Configuration(
            service_endpoint=endpoint,
            credentials=creds,
            auth_type=auth_type if endpoint else None,
            retry_policy=FailFast(),
            max_connections=settings.max_connections,
            version=Version(build=VERSIONS[settings.version]) if settings.version else None,
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


class _Adapter(requests.adapters.HTTPAdapter):
    """exchangelib takes its HTTP adapter from one class attribute for the whole process (its
    documented way to trust a private CA or skip checks); this one looks up each request's
    origin, so one batch's --ca-file or --insecure never applies to another's servers."""

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        with _tls_lock:
            chosen = _verify.get(_origin(url), _verify.get(None))
        super().cert_verify(conn, url, verify if chosen is None else chosen, cert)


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


def _oauth_credentials(settings: EwsSettings, smtp: str) -> Any:
    identity = Identity(primary_smtp_address=smtp)
    if settings.certificate:
        return CertificateCredentials(
            client_id=settings.client_id,
            tenant_id=settings.tenant_id,
            certificate=settings.certificate,
            identity=identity,
        )
    secret = settings.client_secret.reveal() if settings.client_secret else None
    return OAuth2Credentials(
        client_id=settings.client_id,
        client_secret=secret,
        tenant_id=settings.tenant_id,
        identity=identity,
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


class CertificateCredentials(OAuth2Credentials):  # type: ignore[misc]
    """OAuth 2.0 client credentials with a certificate instead of a secret: exchangelib asks
    `token_params()` for each token request, so every new token gets a fresh assertion."""

    def __init__(self, *, certificate: str, **kwargs: Any) -> None:
        super().__init__(client_secret=None, **kwargs)
        self.certificate = certificate

    def token_params(self) -> dict[str, Any]:
        return {
            "include_client_id": True,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(self.certificate, self.client_id, self.token_url),
        }


# -- extended properties --------------------------------------------------------------


class DeliveryTime(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x0E06  # PR_MESSAGE_DELIVERY_TIME: what Exchange shows as DateTimeReceived
    property_type = "SystemTime"


class SubmitTime(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x0039  # PR_CLIENT_SUBMIT_TIME: the sent date
    property_type = "SystemTime"


class MessageFlags(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x0E07  # PR_MESSAGE_FLAGS
    property_type = "Integer"


class FlagStatus(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x1090  # PR_FLAG_STATUS; exchangelib 5.6 Message has no flag field
    property_type = "Integer"


class SourceKey(ExtendedProperty):  # type: ignore[misc]
    """The MessageKey of the source message, so index() recognises it: Exchange's item Size
    is not the MIME size, so (InternetMessageId, size) alone would not match."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "MigratorSourceKey"
    property_type = "String"


MSGFLAG_READ = 0x1
MSGFLAG_UNSENT = 0x8  # set on drafts only: anything else shows as a draft dated today
FLAG_STATUS_FLAGGED = 2

PROPERTIES = {
    "migrator_delivery_time": DeliveryTime,
    "migrator_submit_time": SubmitTime,
    "migrator_message_flags": MessageFlags,
    "migrator_flag_status": FlagStatus,
    "migrator_source_key": SourceKey,
}
_registered = False
_register_lock = threading.Lock()


def register_properties() -> None:
    """Register the properties on exchangelib's Message (process-wide, once)."""
    global _registered
    with _register_lock:
        if not _registered:
            for name, cls in PROPERTIES.items():
                Message.register(name, cls)
            _registered = True


def dump_key(key: MessageKey) -> str:
    return json.dumps(list(key), ensure_ascii=False)


def load_key(text: str | None) -> MessageKey | None:
    try:
        kind, ident, size = json.loads(text or "")
    except (TypeError, ValueError):
        return None
    if isinstance(kind, str) and isinstance(ident, str) and isinstance(size, int):
        return (kind, ident, size)
    return None


def ews_datetime(value: datetime) -> Any:
    """A datetime as exchangelib's EWSDateTime (UTC), as its properties require."""
    return EWSDateTime.from_datetime(value.astimezone(UTC))


FINGERPRINT_FIELDS = ("item_class", "subject", "datetime_created")


def fingerprint(item: Any) -> tuple[str, ...]:
    """How a non-mail item (calendar, contact, task) is recognised at an EWS target after
    ExportItems/UploadItems, which keep its class, subject and creation time."""
    created = aware(item.datetime_created)
    return (
        str(item.item_class or ""),
        str(item.subject or ""),
        created.isoformat() if created else "",
    )


def stable_int(text: str) -> int:
    """A stable 63-bit int from an EWS id (a MessageRef uid or uidvalidity)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def aware(value: object) -> datetime | None:
    """An exchangelib EWSDateTime as a plain aware datetime (UTC)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value.timestamp(), UTC)


# -- errors ---------------------------------------------------------------------------

# Errors that a later pass may not meet: the server or the network had a bad moment.
_TRANSIENT = (
    ews.ErrorTimeoutExpired,
    ews.ErrorServerBusy,
    ews.ErrorInternalServerTransientError,
    ews.ErrorConnectionFailed,
    ews.ErrorConnectionFailedTransientError,
    ews.ErrorMailboxStoreUnavailable,
    ews.ErrorMailboxMoveInProgress,
    ews.ErrorBatchProcessingStopped,
    ews.RateLimitError,
)
# The mailbox cannot be opened at all: "not ready to migrate".
_NOT_READY = (
    ews.ErrorNonExistentMailbox,
    ews.ErrorImpersonateUserDenied,
    ews.ErrorImpersonationDenied,
    ews.ErrorImpersonationFailed,
    ews.ErrorAccessDenied,
    ews.AutoDiscoverFailed,
)
_QUOTA = (ews.ErrorQuotaExceeded,)
_REFUSED = (
    ews.ErrorMessageSizeExceeded,
    ews.ErrorMimeContentConversionFailed,
    ews.ErrorCorruptData,
    ews.ErrorItemCorrupt,
    ews.ErrorItemSave,
)


# OpenSSL's words, which exchangelib keeps only as text (TransportError(str(SSLError))).
_CERTIFICATE_FAILED = re.compile(r"certificate verify failed: ([^()'\"]+)")


def translate(exc: BaseException, what: str) -> Exception:
    """The migrator error for an exchangelib/requests error (its server text kept)."""
    if isinstance(exc, PermanentError | TransientError | ConfigError):
        return exc
    text = str(exc)[:300]
    if isinstance(exc, ews.UnauthorizedError):
        return LoginFailed(f"{what}: login refused: {text}")
    if isinstance(exc, _QUOTA):
        return QuotaExceeded(f"{what}: target is over quota: {text}")
    if isinstance(exc, _REFUSED):
        return MessageRefused(f"{what}: {type(exc).__name__}: {text}")
    if isinstance(exc, _NOT_READY):
        return MailboxNotReady(f"{what}: {type(exc).__name__}: {text}")
    if isinstance(exc, ews.ErrorFolderNotFound | ews.ErrorFolderExists):
        return FolderRefused(f"{what}: {type(exc).__name__}: {text}")
    if isinstance(exc, _TRANSIENT):
        return TransientError(f"{what}: {type(exc).__name__}: {text}")
    if isinstance(exc, ews.ResponseMessageError):
        # A response code no branch above knows: retrying the same request will not help.
        return PermanentError(f"{what}: {type(exc).__name__}: {text}")
    untrusted = _CERTIFICATE_FAILED.search(str(exc))
    if untrusted and isinstance(exc, ews.TransportError | requests.RequestException | OSError):
        # Retrying cannot make an untrusted certificate trusted.
        return PermanentError(
            f"{what}: TLS certificate not trusted: {untrusted.group(1).strip()}; "
            "give --ca-file, or --insecure to skip the check"
        )
    if isinstance(exc, ews.TransportError | requests.RequestException | OSError):
        # exchangelib does not retry a dropped connection on its own (FailFast).
        return TransientError(f"{what}: connection lost: {type(exc).__name__}: {text}")
    if isinstance(exc, ews.EWSError):
        return PermanentError(f"{what}: {type(exc).__name__}: {text}")
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

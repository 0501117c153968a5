"""The job payload: what a worker is handed, as frozen values with `to_json`/`from_json`.

A job is self-contained: both ends (connector kind, server, login, connector settings),
the options, the folder map and the rewrite maps; a worker needs nothing else from the
batch.  Its `version` is checked: a payload of another version is refused, never guessed
at.  Every secret in it (passwords, a connector's secret) is a token sealed bound to
what it is for (`_bound`): which end and which secret, the connector and mailbox, the
server, the login and authorization identity, the TLS options, the connector's bound
settings, and for the source the ManageSieve port forwarding logs in on.  `open_source`
and `open_target` make that description again from the job as it now reads, out of the
very values the worker will connect with: a payload changed in Redis by someone without
the key fails as PayloadTampered before any connection is made.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from migrator import connectors
from migrator.connectors.base import Settings, SourceEnd, TargetEnd
from migrator.errors import BadJob, ConfigError, PayloadTampered
from migrator.model import (
    ConnectOptions,
    Credentials,
    MailboxJob,
    ServerAddress,
    TlsMode,
    TokenLogin,
)
from migrator.model import Login as LoginCredentials
from migrator.oauth import OAuthConfig, tokens_for
from migrator.rewrite import RewriteMaps
from migrator.secrets import TAMPERED, Secret, SecretBox
from migrator.sending import BATCH_BYTES, GROUPING_WINDOW, PREFETCH_BYTES

VERSION = 2
DEFAULT_SIEVE_PORT = 4190  # RFC 5804
_PASSWORD = "password"
_SETTINGS_SECRET = "settings secret"
_AUTH_SECRET = "oauth secret"


@dataclass(frozen=True)
class Login:
    login: str
    password: str  # sealed token ("" where the connector needs none)
    authzid: str | None = None


@dataclass(frozen=True)
class End:
    """One end of a job, as enqueued (secrets sealed)."""

    kind: str  # the connector's kind
    identity: str
    server: ServerAddress
    login: Login
    root_folder: str | None = None
    settings: Mapping[str, Any] | None = None  # the connector's, its secret sealed in "secret"
    # OAuth 2.0: where the end's bearer tokens come from (OAuthConfig), its secret sealed
    # in "secret"; None: the login's password.
    auth: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Options:
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    since: datetime | None = None
    until: datetime | None = None
    foldermap_xml: str | None = None  # None: the shipped config/foldermap.xml
    max_connections_per_server: int = 8
    forward_after_copy: bool = False
    sieve_port: int = DEFAULT_SIEVE_PORT
    late_commit_grace: float = 30.0
    connections_per_mailbox: int = 1
    batch_bytes: int = BATCH_BYTES  # the send loop's bounds (migrator.sending)
    prefetch_bytes: int = PREFETCH_BYTES
    grouping_window: int = GROUPING_WINDOW
    fetch_window: int = 0  # messages per FETCH round trip at the source; 0: its connector's


@dataclass(frozen=True)
class Job:
    """A migration job, or a forwarding job (no target end: only its identity)."""

    line: int
    source: End
    target_identity: str
    options: Options
    target: End | None = None
    mailbox_key: str = ""
    legacy_mailbox_key: str | None = None
    activation_quota: int | None = None
    rewrite: RewriteMaps | None = None
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(_job_json(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        """The job a payload holds; BadJob naming what is wrong with one that is not."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadJob(f"the job payload is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadJob("the job payload is not a JSON object")
        version = data.get("version")
        if version != VERSION:
            raise BadJob(
                f"the job payload is version {version!r}, this worker reads version {VERSION}: "
                "enqueue the batch again with this version"
            )
        try:
            return _job(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BadJob(f"the job payload is malformed: {type(exc).__name__} {exc}") from None


# -- sealing (the enqueuing side) -------------------------------------------------------


def seal_end(
    role: str,
    kind: str,
    identity: str,
    server: ServerAddress,
    credentials: Credentials,
    box: SecretBox,
    *,
    root_folder: str | None = None,
    settings: Settings | None = None,
    auth: OAuthConfig | None = None,
    options: Options,
) -> End:
    """An end with its password and its settings' secret sealed, bound to what they are
    for.  `role` is "source" or "target".  With `auth`, the end logs in with bearer
    tokens from that provider, as `credentials.login` (its password is not sent)."""
    settings_json = None if settings is None else settings.to_json()
    unsealed = End(
        kind,
        identity,
        server,
        Login(credentials.login, "", credentials.authzid),
        root_folder,
        settings_json,
        None if auth is None else auth.to_json(),
    )
    bound = _bound(role, unsealed, settings, options)
    password = credentials.password
    login = dataclasses.replace(
        # Sealed even when empty (files, an OAuth client): the seal is what binds the end.
        unsealed.login,
        password=box.seal(password, bound(_PASSWORD)),
    )
    if settings is not None:
        secret = settings.secret
        sealed = box.seal(secret, bound(_SETTINGS_SECRET)) if secret else None
        settings_json = {**settings.to_json(), "secret": sealed}
    auth_json = None
    if auth is not None:
        auth_secret = auth.secret
        sealed = box.seal(auth_secret, bound(_AUTH_SECRET)) if auth_secret else None
        auth_json = {**auth.to_json(), "secret": sealed}
    return dataclasses.replace(unsealed, login=login, settings=settings_json, auth=auth_json)


# -- opening (the worker) ---------------------------------------------------------------


def open_source(job: Job, box: SecretBox) -> SourceEnd:
    """The source end as the worker connects to it, its secrets opened for the job as it
    reads now (PayloadTampered if they do not open)."""
    end = job.source
    what = f"source mailbox {end.identity}"
    settings = _settings(end, job.options.connect, what)
    bound = _bound("source", end, settings, job.options)
    password = _open(box, end.login.password, bound(_PASSWORD), what)
    mailbox = MailboxJob(
        line=job.line,
        source_identity=end.identity,
        source_server=end.server,
        source_credentials=_login(box, end, job.options.connect, password, bound, what),
        source_root_folder=end.root_folder,
        target_identity=job.target_identity,
    )
    return SourceEnd(
        mailbox,
        job.options.connect,
        _open_settings(box, end, settings, bound(_SETTINGS_SECRET), what),
        job.options.sieve_port,
        job.options.fetch_window,
    )


def open_target(job: Job, box: SecretBox) -> TargetEnd:
    """The target end as the worker connects to it, its secrets opened likewise."""
    end = job.target
    if end is None:
        raise BadJob("a forwarding job has no target end")
    what = f"target mailbox {end.identity}"
    settings = _settings(end, job.options.connect, what)
    bound = _bound("target", end, settings, job.options)
    password = _open(box, end.login.password, bound(_PASSWORD), what)
    return TargetEnd(
        end.identity,
        end.server,
        _login(box, end, job.options.connect, password, bound, what),
        job.options.connect,
        _open_settings(box, end, settings, bound(_SETTINGS_SECRET), what),
    )


def _login(
    box: SecretBox, end: End, connect: ConnectOptions, password: Secret, bound: Any, what: str
) -> LoginCredentials:
    """The end's login: its password, or bearer tokens from its OAuth provider (this
    process's, shared by every mailbox with the same provider)."""
    if end.auth is None:
        return Credentials(end.login.login, password, end.login.authzid)
    config = _auth_config(end, what)
    sealed = end.auth.get("secret")
    if sealed:
        config = config.with_secret(box.open(str(sealed), bound(_AUTH_SECRET), what=what))
    return TokenLogin(end.login.login, tokens_for(config, connect))


def _auth_config(end: End, what: str) -> OAuthConfig:
    try:
        return OAuthConfig.from_json(end.auth or {})
    except (KeyError, TypeError, ValueError):
        raise PayloadTampered(f"{what}: {TAMPERED}") from None


def _settings(end: End, connect: ConnectOptions, what: str) -> Settings | None:
    """The end's connector settings; a payload whose settings its connector cannot read
    was changed (we never write such a one)."""
    if end.settings is None:
        return None
    try:
        return connectors.connector(end.kind).settings_from_json(end.settings, connect)
    except (ConfigError, KeyError, TypeError, ValueError):
        raise PayloadTampered(f"{what}: {TAMPERED}") from None


def _open(box: SecretBox, token: str, bound: Mapping[str, object], what: str) -> Secret:
    if not token:  # every end is sealed, a password or not: this one was changed
        raise PayloadTampered(f"{what}: {TAMPERED}")
    return box.open(token, bound, what=what)


def _open_settings(
    box: SecretBox,
    end: End,
    settings: Settings | None,
    bound: Mapping[str, object],
    what: str,
) -> Settings | None:
    if settings is None or end.settings is None:
        return settings
    sealed = end.settings.get("secret")
    return settings.with_secret(box.open(str(sealed), bound, what=what)) if sealed else settings


def _bound(role: str, end: End, settings: Settings | None, options: Options) -> Any:
    """What the secrets of `end` are bound to, for each secret it holds."""
    connect = options.connect
    common: dict[str, object] = {
        "kind": end.kind,
        "identity": end.identity,
        "root_folder": end.root_folder,
        "server": {
            "protocol": end.server.protocol,
            "host": end.server.host,
            "port": end.server.port,
            "tls": end.server.tls.value,
        },
        "login": end.login.login,
        "authzid": end.login.authzid,
        "tls": {
            "allow_plaintext": connect.allow_plaintext,
            "insecure": connect.insecure,
            "ca_file": connect.ca_file,
        },
        "settings": None if settings is None else settings.bound(),
        "sieve_port": options.sieve_port if role == "source" else None,
    }
    if end.auth is not None:
        # Only where there is one, so payloads without OAuth seal as they always have.
        common["auth"] = _auth_config(end, f"{role} mailbox {end.identity}").bound()
    return lambda secret: {"for": f"{role} {secret}", **common}


# -- JSON -------------------------------------------------------------------------------


def _job_json(job: Job) -> dict[str, Any]:
    target: dict[str, Any] = {"identity": job.target_identity}
    if job.target is not None:
        target = {**_end_json(job.target), "activation_quota": job.activation_quota}
    return {
        "version": job.version,
        "line": job.line,
        "mailbox_key": job.mailbox_key,
        "legacy_mailbox_key": job.legacy_mailbox_key,
        "source": _end_json(job.source),
        "target": target,
        "options": _options_json(job.options),
        "rewrite": None if job.rewrite is None else rewrite_json(job.rewrite),
    }


def _job(data: Mapping[str, Any]) -> Job:
    tgt = data["target"]
    rewrite = data.get("rewrite")
    return Job(
        line=int(data["line"]),
        source=_end(data["source"]),
        target_identity=str(tgt["identity"]),
        options=_options(data["options"]),
        target=_end(tgt) if "server" in tgt else None,
        mailbox_key=str(data.get("mailbox_key") or ""),
        legacy_mailbox_key=data.get("legacy_mailbox_key"),
        activation_quota=_optional_int(tgt.get("activation_quota")),
        rewrite=None if rewrite is None else rewrite_maps(rewrite),
        version=int(data["version"]),
    )


def _end_json(end: End) -> dict[str, Any]:
    return {
        "kind": end.kind,
        "identity": end.identity,
        "server": server_json(end.server),
        "credentials": {
            "login": end.login.login,
            "password": end.login.password,
            "authzid": end.login.authzid,
        },
        "root_folder": end.root_folder,
        "settings": None if end.settings is None else dict(end.settings),
        "auth": None if end.auth is None else dict(end.auth),
    }


def _end(data: Mapping[str, Any]) -> End:
    creds = data["credentials"]
    settings = data.get("settings")
    if settings is not None and not isinstance(settings, dict):
        raise TypeError("settings is not an object")
    auth = data.get("auth")
    if auth is not None and not isinstance(auth, dict):
        raise TypeError("auth is not an object")
    return End(
        kind=str(data["kind"]),
        identity=str(data["identity"]),
        server=server(data["server"]),
        login=Login(str(creds["login"]), str(creds.get("password") or ""), creds.get("authzid")),
        root_folder=data.get("root_folder"),
        settings=settings,
        auth=auth,
    )


def server_json(address: ServerAddress) -> dict[str, Any]:
    return {
        "host": address.host,
        "port": address.port,
        "tls": address.tls.value,
        "protocol": address.protocol,
    }


def server(data: Mapping[str, Any]) -> ServerAddress:
    return ServerAddress(
        str(data["host"]), int(data["port"]), TlsMode(data["tls"]), protocol=str(data["protocol"])
    )


def _options_json(options: Options) -> dict[str, Any]:
    connect = options.connect
    return {
        "timeout": connect.timeout,
        "ca_file": connect.ca_file,
        "insecure": connect.insecure,
        "allow_plaintext": connect.allow_plaintext,
        "since": options.since.isoformat() if options.since else None,
        "until": options.until.isoformat() if options.until else None,
        "foldermap_xml": options.foldermap_xml,
        "max_connections_per_server": options.max_connections_per_server,
        "forward_after_copy": options.forward_after_copy,
        "sieve_port": options.sieve_port,
        "late_commit_grace": options.late_commit_grace,
        "connections_per_mailbox": options.connections_per_mailbox,
        "batch_bytes": options.batch_bytes,
        "prefetch_bytes": options.prefetch_bytes,
        "grouping_window": options.grouping_window,
        "fetch_window": options.fetch_window,
    }


def _options(data: Mapping[str, Any]) -> Options:
    return Options(
        connect=ConnectOptions(
            timeout=float(data["timeout"]),
            ca_file=data.get("ca_file"),
            insecure=bool(data.get("insecure")),
            allow_plaintext=bool(data.get("allow_plaintext")),
        ),
        since=_date(data.get("since")),
        until=_date(data.get("until")),
        foldermap_xml=data.get("foldermap_xml"),
        max_connections_per_server=int(data["max_connections_per_server"]),
        forward_after_copy=bool(data.get("forward_after_copy")),
        sieve_port=int(data.get("sieve_port") or DEFAULT_SIEVE_PORT),
        late_commit_grace=float(data.get("late_commit_grace", 30.0)),
        connections_per_mailbox=int(data.get("connections_per_mailbox", 1)),
        batch_bytes=int(data.get("batch_bytes", BATCH_BYTES)),
        prefetch_bytes=int(data.get("prefetch_bytes", PREFETCH_BYTES)),
        grouping_window=int(data.get("grouping_window", GROUPING_WINDOW)),
        fetch_window=int(data.get("fetch_window", 0)),
    )


def rewrite_json(maps: RewriteMaps) -> dict[str, Any]:
    return {
        "identities": dict(maps.identities),
        "x500": dict(maps.x500),
        "domains": dict(maps.domains),
        "keep_original": maps.keep_original,
    }


def rewrite_maps(data: Mapping[str, Any]) -> RewriteMaps:
    return RewriteMaps(
        identities=data["identities"],
        x500=data["x500"],
        domains=data["domains"],
        keep_original=bool(data["keep_original"]),
    )


def _date(text: object) -> datetime | None:
    return datetime.fromisoformat(str(text)) if text else None


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))

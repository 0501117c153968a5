"""The job's secrets, sealed where a batch is enqueued and opened where a worker runs it
(the payload itself, its values and JSON: migrator.jobpayload).

Every secret in it (passwords, a connector's secret) is a token sealed bound to
what it is for (`_bound`): which end and which secret, the connector and mailbox, the
server, the login and authorization identity, the TLS options, the connector's bound
settings, and for the source the ManageSieve port forwarding logs in on.  `open_source`
and `open_target` make that description again from the job as it now reads, out of the
very values the worker will connect with: a payload changed in Redis by someone without
the key fails as PayloadTampered before any connection is made.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from migrator import connectors
from migrator.connectors.base import Settings, SourceEnd, TargetEnd
from migrator.errors import BadJob, ConfigError, PayloadTampered
from migrator.jobpayload import DEFAULT_SIEVE_PORT, VERSION, End, Job, Login, Options
from migrator.model import (
    ConnectOptions,
    Credentials,
    MailboxJob,
    ServerAddress,
    TokenLogin,
)
from migrator.model import Login as LoginCredentials
from migrator.oauth import OAuthConfig, tokens_for
from migrator.secrets import TAMPERED, Secret, SecretBox

__all__ = [
    "DEFAULT_SIEVE_PORT",
    "VERSION",
    "End",
    "Job",
    "Login",
    "Options",
    "open_source",
    "open_target",
    "seal_end",
]

_PASSWORD = "password"
_SETTINGS_SECRET = "settings secret"
_AUTH_SECRET = "oauth secret"

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

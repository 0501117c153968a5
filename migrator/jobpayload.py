"""The job payload as frozen values, and its JSON: what a worker is handed.

A job is self-contained: both ends (connector kind, server, login, connector settings),
the options, the folder map and the rewrite maps; a worker needs nothing else from the
batch.  Its `version` is checked: a payload of another version is refused, never guessed
at.  The secrets in it are sealed tokens; migrator.jobs seals them and opens them again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from migrator.errors import BadJob
from migrator.model import ConnectOptions, ServerAddress, TlsMode
from migrator.rewrite import RewriteMaps
from migrator.sending import BATCH_BYTES, GROUPING_WINDOW, PREFETCH_BYTES

VERSION = 2
DEFAULT_SIEVE_PORT = 4190  # RFC 5804


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

"""Jobs as JSON payloads: the pieces both kinds of job carry (a migration, a forwarding
change), sealed where they hold a secret, and read back on the worker.

Each secret is sealed bound to what it is for (`_Side.bound_to`): which side and which
secret, the mailbox, the protocol and server it goes to, the login and authorization
identity it goes with, the TLS options it goes under, and for Exchange the endpoint, auth
type and client.  The worker opens it with that description made again from the payload
as it reads it, out of the very values it will connect with: a payload changed in Redis
by someone without the key fails as PayloadTampered before any connection is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from migrator.batch import Credentials, MailboxJob, ServerAddress, TlsMode
from migrator.ews import EwsSettings
from migrator.imapconn import ConnectOptions
from migrator.secrets import SecretBox

SOURCE = "source"
TARGET = "target"
DEFAULT_SIEVE_PORT = 4190  # RFC 5804


@dataclass(frozen=True)
class _Side:
    """One end of a job as a worker will use it: everything its secrets are bound to."""

    side: str  # SOURCE or TARGET
    kind: str  # imap, pop, ews
    identity: str
    root_folder: str | None
    server: ServerAddress
    login: str
    authzid: str | None
    connect: ConnectOptions
    ews: EwsSettings | None
    sieve_port: int | None  # where forwarding logs in with the source password
    # A local source (connectors/local): the --source-root its path must stay below, and
    # its mbox format.  Bound only where present, so other payloads' seals do not change.
    local: Mapping[str, str] | None = None

    def bound_to(self, secret: str) -> dict[str, object]:
        bound = self._bound_to(secret)
        if self.local is not None:
            bound["local"] = dict(self.local)
        return bound

    def _bound_to(self, secret: str) -> dict[str, object]:
        ews = self.ews
        return {
            "for": f"{self.side} {secret}",
            "kind": self.kind,
            "identity": self.identity,
            "root_folder": self.root_folder,
            "server": {
                "protocol": self.server.protocol,
                "host": self.server.host,
                "port": self.server.port,
                "tls": self.server.tls.value,
            },
            "login": self.login,
            "authzid": self.authzid,
            "tls": {
                "allow_plaintext": self.connect.allow_plaintext,
                "insecure": self.connect.insecure,
                "ca_file": self.connect.ca_file,
            },
            "ews": None
            if ews is None
            else {
                "endpoint": ews.endpoint,
                "auth": ews.auth.value,
                "client_id": ews.client_id,
                "tenant_id": ews.tenant_id,
            },
            "sieve_port": self.sieve_port,
        }

    @property
    def what(self) -> str:
        return f"{self.side} mailbox {self.identity}"


_PASSWORD = "password"
_CLIENT_SECRET = "ews client secret"


# -- building ---------------------------------------------------------------------------


def source_json(
    job: MailboxJob,
    kind: str,
    box: SecretBox,
    ews: EwsSettings | None,
    connect: ConnectOptions,
    sieve_port: int,
    local: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The source side of a job: where, how to log in (sealed), which mailbox; for a
    local source (`local`: LocalSettings.to_json), the root and format, bound to the seal
    of its (empty) password like the path itself, so neither changes in Redis unseen."""
    credentials = job.source_credentials
    side = _Side(
        SOURCE,
        kind,
        job.source_identity,
        job.source_root_folder,
        job.source_server,
        credentials.login,
        credentials.authzid,
        connect,
        ews,
        sieve_port or DEFAULT_SIEVE_PORT,
        local,
    )
    source: dict[str, Any] = {
        "kind": kind,
        "identity": job.source_identity,
        "server": server_json(job.source_server),
        "credentials": _creds_json(credentials, box, side),
        "root_folder": job.source_root_folder,
    }
    if ews is not None:
        source["ews"] = _ews_json(ews, box, side)
    if local is not None:
        source["local"] = dict(local)
    return source


def target_json(
    kind: str,
    identity: str,
    address: ServerAddress,
    credentials: Credentials,
    connect: ConnectOptions,
    ews: EwsSettings | None,
    box: SecretBox,
) -> dict[str, Any]:
    """The target side of a migration job: the admin's login (sealed) for `identity`, and
    EWS settings (the client secret sealed) with the connection slot they count against."""
    side = _Side(
        TARGET,
        kind,
        identity,
        None,
        address,
        credentials.login,
        credentials.authzid,
        connect,
        ews,
        None,
    )
    target: dict[str, Any] = {
        "kind": kind,
        "identity": identity,
        "server": server_json(address),
        "credentials": _creds_json(credentials, box, side),
    }
    if ews is not None:
        target["ews"] = {**_ews_json(ews, box, side), "slot": ews.slot_key()}
    return target


def _creds_json(credentials: Credentials, box: SecretBox, side: _Side) -> dict[str, Any]:
    return {
        "login": credentials.login,
        "password": box.seal(credentials.password, side.bound_to(_PASSWORD)),
        "authzid": credentials.authzid,
    }


def _ews_json(settings: EwsSettings, box: SecretBox, side: _Side) -> dict[str, Any]:
    secret = settings.client_secret
    return {
        **settings.to_json(),
        "client_secret": box.seal(secret, side.bound_to(_CLIENT_SECRET)) if secret else None,
    }


def connect_json(connect: ConnectOptions) -> dict[str, Any]:
    return {
        "timeout": connect.timeout,
        "ca_file": connect.ca_file,
        "insecure": connect.insecure,
        "allow_plaintext": connect.allow_plaintext,
    }


def server_json(address: ServerAddress) -> dict[str, Any]:
    return {
        "host": address.host,
        "port": address.port,
        "tls": address.tls.value,
        "protocol": address.protocol,
    }


# -- reading (the worker) ----------------------------------------------------------------


def mailbox_job(payload: Mapping[str, Any], box: SecretBox) -> MailboxJob:
    """The MailboxJob a payload was built from (its source and target identity), its
    source password opened for the source as the payload names it now."""
    side = _source(payload)
    sealed = str(payload["source"]["credentials"]["password"])
    return MailboxJob(
        line=int(payload["line"]),
        source_identity=side.identity,
        source_server=side.server,
        source_credentials=Credentials(
            side.login, box.open(sealed, side.bound_to(_PASSWORD), what=side.what), side.authzid
        ),
        source_root_folder=side.root_folder,
        target_identity=str(payload["target"]["identity"]),
    )


def target_credentials(payload: Mapping[str, Any], box: SecretBox) -> Credentials:
    """The target admin's login for the target mailbox, opened for the target as the
    payload names it now."""
    side = _target(payload)
    sealed = str(payload["target"]["credentials"]["password"])
    password = box.open(sealed, side.bound_to(_PASSWORD), what=side.what)
    return Credentials(side.login, password, side.authzid)


def ews_settings(payload: Mapping[str, Any], end: str, box: SecretBox) -> EwsSettings | None:
    """The EWS settings of one end (SOURCE or TARGET), None where it has none; the client
    secret opened for that end as the payload names it now."""
    side = _source(payload) if end == SOURCE else _target(payload)
    if side.ews is None:
        return None
    sealed = payload[end]["ews"].get("client_secret")
    if not sealed:
        return side.ews
    secret = box.open(str(sealed), side.bound_to(_CLIENT_SECRET), what=side.what)
    return replace(side.ews, client_secret=secret)


def connect_options(opts: Mapping[str, Any]) -> ConnectOptions:
    return ConnectOptions(
        timeout=float(opts["timeout"]),
        ca_file=opts.get("ca_file"),
        insecure=bool(opts.get("insecure")),
        allow_plaintext=bool(opts.get("allow_plaintext")),
    )


def sieve_port(opts: Mapping[str, Any]) -> int:
    """The ManageSieve port forwarding uses, on the source host."""
    return int(opts.get("sieve_port") or DEFAULT_SIEVE_PORT)


def server(data: Mapping[str, Any]) -> ServerAddress:
    return ServerAddress(
        str(data["host"]),
        int(data["port"]),
        TlsMode(data["tls"]),
        protocol=str(data.get("protocol", "imap")),
    )


def _source(payload: Mapping[str, Any]) -> _Side:
    src, opts = payload["source"], payload["options"]
    connect = connect_options(opts)
    creds = src["credentials"]
    return _Side(
        SOURCE,
        str(src["kind"]),
        str(src["identity"]),
        src.get("root_folder"),
        server(src["server"]),
        str(creds["login"]),
        creds.get("authzid"),
        connect,
        _ews(src, connect),
        sieve_port(opts),
        src.get("local"),
    )


def _target(payload: Mapping[str, Any]) -> _Side:
    tgt = payload["target"]
    connect = connect_options(payload["options"])
    creds = tgt["credentials"]
    return _Side(
        TARGET,
        str(tgt["kind"]),
        str(tgt["identity"]),
        None,
        server(tgt["server"]),
        str(creds["login"]),
        creds.get("authzid"),
        connect,
        _ews(tgt, connect),
        None,
    )


def _ews(end: Mapping[str, Any], connect: ConnectOptions) -> EwsSettings | None:
    data = end.get("ews")
    return EwsSettings.from_json(data, connect) if data is not None else None

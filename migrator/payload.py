"""Jobs as JSON payloads: the pieces both kinds of job carry (a migration, a forwarding
change), sealed where they hold a secret, and read back on the worker."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrator.batch import Credentials, MailboxJob, ServerAddress, TlsMode
from migrator.ews import EwsSettings
from migrator.imapconn import ConnectOptions
from migrator.secrets import SecretBox


def source_json(
    job: MailboxJob, kind: str, box: SecretBox, ews: EwsSettings | None
) -> dict[str, Any]:
    """The source side of a job: where, how to log in (sealed), which mailbox."""
    source: dict[str, Any] = {
        "kind": kind,
        "identity": job.source_identity,
        "server": server_json(job.source_server),
        "credentials": creds_json(job.source_credentials, box),
        "root_folder": job.source_root_folder,
    }
    if ews is not None:
        source["ews"] = ews.to_json(box)
    return source


def mailbox_job(payload: Mapping[str, Any], box: SecretBox) -> MailboxJob:
    """The MailboxJob a payload was built from (its source and target identity)."""
    src = payload["source"]
    return MailboxJob(
        line=int(payload["line"]),
        source_identity=str(src["identity"]),
        source_server=server(src["server"]),
        source_credentials=creds(src["credentials"], box),
        source_root_folder=src.get("root_folder"),
        target_identity=str(payload["target"]["identity"]),
    )


def connect_options(opts: Mapping[str, Any]) -> ConnectOptions:
    return ConnectOptions(
        timeout=float(opts["timeout"]),
        ca_file=opts.get("ca_file"),
        insecure=bool(opts.get("insecure")),
        allow_plaintext=bool(opts.get("allow_plaintext")),
    )


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


def creds_json(credentials: Credentials, box: SecretBox) -> dict[str, Any]:
    return {
        "login": credentials.login,
        "password": box.seal(credentials.password),
        "authzid": credentials.authzid,
    }


def server(data: Mapping[str, Any]) -> ServerAddress:
    return ServerAddress(
        str(data["host"]),
        int(data["port"]),
        TlsMode(data["tls"]),
        protocol=str(data.get("protocol", "imap")),
    )


def creds(data: Mapping[str, Any], box: SecretBox) -> Credentials:
    return Credentials(str(data["login"]), box.open(str(data["password"])), data.get("authzid"))


def ews_settings(
    end: Mapping[str, Any], box: SecretBox, connect: ConnectOptions
) -> EwsSettings | None:
    data = end.get("ews")
    return EwsSettings.from_json(data, box, connect) if data is not None else None

"""The value types every layer shares: where a server is, how to log in, which mailbox
goes where, and how to connect. No protocol library: the connectors turn these into
connections, the CSV parser and the job payload make and read them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from migrator.errors import BadBatchRow
from migrator.secrets import Secret


class TlsMode(str, enum.Enum):  # noqa: UP042
    IMPLICIT = "implicit"  # imaps://, pop3s://: TLS from the first byte
    STARTTLS = "starttls"  # plain connect, then STARTTLS (required unless plaintext is allowed)


@dataclass(frozen=True)
class ServerAddress:
    host: str  # an IPv6 address is kept without its brackets
    port: int  # 0: a local source, host its path (connectors/local)
    tls: TlsMode
    protocol: str = "imap"  # the connector's (imap, pop3, ews, maildir, mbox)

    def __str__(self) -> str:
        if self.port == 0:  # a local source: host is its real path
            return f"file://{self.host}"
        scheme = self.protocol + ("s" if self.tls is TlsMode.IMPLICIT else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """What to send to log in: LOGIN login password, or AUTHENTICATE PLAIN with authzid."""

    login: str
    password: Secret
    authzid: str | None = None  # SASL PLAIN authorization identity (proxyauth)


@dataclass(frozen=True)
class AdminLogin:
    """The admin account given to the tool (combined, rootfolder, proxyauth)."""

    login: str
    password: Secret


@dataclass(frozen=True)
class MailboxJob:
    """One mailbox to migrate: where to read, how to log in, where it goes."""

    line: int
    source_identity: str
    source_server: ServerAddress
    source_credentials: Credentials
    source_root_folder: str | None
    target_identity: str
    # The row's own login for its target mailbox (--target-method individual); None:
    # the target admin's, for each identity.
    target_credentials: Credentials | None = None


@dataclass(frozen=True)
class ConnectOptions:
    timeout: float = 60.0
    ca_file: str | None = None  # extra CA bundle (a private CA); system CAs otherwise
    insecure: bool = False  # skip certificate checks: only by the operator's explicit choice
    allow_plaintext: bool = False  # allow a server that offers no STARTTLS


@dataclass(frozen=True)
class BatchResult:
    """A batch CSV read: the jobs of its good rows, and a problem for each bad one."""

    jobs: tuple[MailboxJob, ...]
    problems: tuple[BadBatchRow, ...]  # in file order

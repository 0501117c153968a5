"""What a connector is: everything the core asks of one protocol, in one place.

The runner, the CLI, velocity runs and forwarding know connectors only through
`Connector` and the registry (`migrator.connectors.connector(kind)`); nothing outside a
connector's package asks which protocol it is talking to.  `BaseConnector` gives the
answers of a protocol that has no such thing (no options, no settings, no extra steps),
so a connector overrides only what it has.
"""

from __future__ import annotations

import argparse
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from migrator.errors import ConfigError
from migrator.foldermap import FolderMap
from migrator.forwarding import ForwardAction, ForwardOutcome, manual_outcome
from migrator.gmail import ByteMeters
from migrator.model import (
    BatchResult,
    ConnectOptions,
    Login,
    MailboxJob,
    ServerAddress,
    TlsMode,
)
from migrator.report import MailboxResult
from migrator.secrets import Secret
from migrator.sources.base import MailboxSource
from migrator.targets.base import MailboxTarget

if TYPE_CHECKING:  # velocity's own, imported by velocity commands only
    from migrator.velocity.plan import InventoryRow


class Role(str, enum.Enum):  # noqa: UP042
    SOURCE = "source"
    TARGET = "target"


class Settings(Protocol):
    """A connector's own settings for one end of a job (Exchange: endpoint, auth, client),
    carried in the job payload.  At most one secret, sealed there like a password."""

    @property
    def secret(self) -> Secret | None: ...

    def with_secret(self, secret: Secret | None) -> Settings: ...

    def to_json(self) -> dict[str, Any]:
        """The payload form, without the secret."""
        ...

    def bound(self) -> dict[str, object]:
        """What the end's secrets are bound to, beside its server and login: a change to
        any of these in a queued payload makes them fail to open."""
        ...


@dataclass(frozen=True)
class SourceEnd:
    """The source side of a job, as a worker connects to it (secrets opened)."""

    job: MailboxJob
    connect: ConnectOptions
    settings: Settings | None = None
    sieve_port: int | None = None  # ManageSieve, where forwarding is set by Sieve
    fetch_window: int = 0  # messages per fetch round trip; 0: the connector's own default
    meters: ByteMeters | None = None  # daily byte caps (Gmail's), handed in by the runner


class UploadLedger(Protocol):
    """Bytes uploaded to a mailbox within a window, counted across every worker
    (migrator.state.StateStore): for targets with an upload budget (Microsoft Graph)."""

    def reserve_upload(self, name: str, size: int, limit: int, window: float) -> float:
        """0 once `size` bytes are counted, else the seconds to wait before asking again."""
        ...


@dataclass(frozen=True)
class TargetEnd:
    """The target side of a job, as a worker connects to it (secrets opened)."""

    identity: str
    server: ServerAddress
    credentials: Login
    connect: ConnectOptions
    settings: Settings | None = None
    meters: ByteMeters | None = None  # daily byte caps (Gmail's), handed in by the runner
    uploads: UploadLedger | None = None  # the runner's StateStore, for upload budgets


class Connector(Protocol):
    """One protocol: how the CLI reads its options, how a worker opens it, and the extra
    steps it has."""

    kind: str  # --source-type / --target value, and the payload's "kind"
    protocol: str  # ServerAddress.protocol: the SourceServer schemes it reads
    schemes: Mapping[str, tuple[TlsMode, int]]  # SourceServer scheme -> TLS mode, port
    roles: frozenset[Role]
    surveys: bool  # whether `survey` can measure its sources (velocity inventory)
    needs_login: bool  # whether a source row needs SourceLoginID (files, Graph: no)
    receives_mail: bool  # whether forwarding from it means anything (files: no)
    # Whether open_source waits in logingate.hold_login() right before its login: its
    # connection is then made while the target is opened (copier._open_both).
    gated_login: bool

    def parse_address(self, text: str) -> ServerAddress | None:
        """A SourceServer cell that is not `scheme://host:port` (a path below a root), or
        None to read it by `schemes`.  ValueError, in words for whoever typed the cell."""
        ...

    def check_batch(self, result: BatchResult, args: argparse.Namespace) -> BatchResult:
        """The read batch, checked against the command's options (paths resolved below
        --source-root), each row that fails named by its line."""
        ...

    def add_arguments(self, parser: argparse.ArgumentParser, roles: frozenset[Role]) -> None:
        """Its command-line options for the ends a command has (`roles`)."""
        ...

    def settings(
        self, args: argparse.Namespace, role: Role, connect: ConnectOptions
    ) -> Settings | None:
        """Its settings for `role` from the parsed options; None where it has none."""
        ...

    def settings_from_json(self, data: Mapping[str, Any], connect: ConnectOptions) -> Settings:
        """Settings from their payload form (the secret is opened by the payload)."""
        ...

    def target_server(self, settings: Settings | None) -> ServerAddress | None:
        """Where the target is when its settings say it (an EWS endpoint); None to read
        --target-server."""
        ...

    def needs_password(self, settings: Settings | None) -> bool:
        """Whether the target admin logs in with a password (not only a client secret)."""
        ...

    def slot(self, settings: Settings | None) -> tuple[str, int] | None:
        """The connection cap a target mailbox counts against beside its source server's
        (an EWS tenant's): (name, cap), or None."""
        ...

    def open_source(self, end: SourceEnd) -> MailboxSource: ...

    def open_target(self, end: TargetEnd) -> MailboxTarget: ...

    def after_copy(
        self, result: MailboxResult, source: SourceEnd, target: TargetEnd, target_kind: str
    ) -> MailboxResult:
        """Steps after the mail, when it is all in (Exchange: calendar and contacts)."""
        ...

    def forward(self, action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
        """Set, remove or check forwarding from the source mailbox to its target."""
        ...

    def survey(
        self,
        job: MailboxJob,
        connect: ConnectOptions,
        folder_map: FolderMap,
        *,
        quota: int | None = None,
        use_status_size: bool = True,
    ) -> InventoryRow:
        """Sizes and item counts of a source mailbox, for a velocity plan."""
        ...

    def empty_target(self, end: TargetEnd) -> int:
        """Delete every message of a target mailbox (velocity runs); how many."""
        ...


class BaseConnector:
    """The answers of a protocol without options, settings or extra steps."""

    kind = ""
    protocol = ""
    schemes: ClassVar[Mapping[str, tuple[TlsMode, int]]] = {}
    roles: frozenset[Role] = frozenset({Role.SOURCE})
    surveys = False
    needs_login = True
    receives_mail = True
    gated_login = False

    def parse_address(self, text: str) -> ServerAddress | None:
        return None

    def check_batch(self, result: BatchResult, args: argparse.Namespace) -> BatchResult:
        return result

    def add_arguments(self, parser: argparse.ArgumentParser, roles: frozenset[Role]) -> None:
        return None

    def settings(
        self, args: argparse.Namespace, role: Role, connect: ConnectOptions
    ) -> Settings | None:
        return None

    def settings_from_json(self, data: Mapping[str, Any], connect: ConnectOptions) -> Settings:
        raise ConfigError(f"{self.kind} has no settings, but the job payload holds some")

    def target_server(self, settings: Settings | None) -> ServerAddress | None:
        return None

    def needs_password(self, settings: Settings | None) -> bool:
        return True

    def slot(self, settings: Settings | None) -> tuple[str, int] | None:
        return None

    def open_source(self, end: SourceEnd) -> MailboxSource:
        raise ConfigError(f"{self.kind} cannot be a source")

    def open_target(self, end: TargetEnd) -> MailboxTarget:
        raise ConfigError(f"{self.kind} cannot be a target")

    def after_copy(
        self, result: MailboxResult, source: SourceEnd, target: TargetEnd, target_kind: str
    ) -> MailboxResult:
        return result

    def forward(self, action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
        return manual_outcome(action, source.job, f"{self.kind} has no way to set forwarding")

    def survey(
        self,
        job: MailboxJob,
        connect: ConnectOptions,
        folder_map: FolderMap,
        *,
        quota: int | None = None,
        use_status_size: bool = True,
    ) -> InventoryRow:
        raise ConfigError(f"velocity plans survey IMAP sources only, not {self.kind}")

    def empty_target(self, end: TargetEnd) -> int:
        raise ConfigError(f"velocity runs can empty IMAP targets only, not {self.kind}")

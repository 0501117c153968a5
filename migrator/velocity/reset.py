"""Empty the pilot's target mailboxes, and forget their checkpoints, between points.

Each measurement point must copy the whole pilot again: the copier skips mail that
is checkpointed, and mail it recognises at the target.  So before a point every
message of every folder of each target mailbox is deleted (by the target's connector:
`Connector.empty_target`) and the checkpoints are dropped.  This destroys mail: the
CLI runs it only with --i-understand-targets-are-emptied, and never where a target is
its own source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from migrator import jobs as joblib
from migrator.connectors import connector
from migrator.connectors.base import TargetEnd
from migrator.errors import ConfigError
from migrator.model import ServerAddress
from migrator.secrets import SecretBox
from migrator.state import NewJob, StateStore


@dataclass(frozen=True)
class PilotTarget:
    """A target mailbox of the pilot, as the worker reaches it."""

    kind: str  # the target's connector
    end: TargetEnd
    mailbox_key: str
    source_identity: str
    source_server: ServerAddress

    @property
    def identity(self) -> str:
        return self.end.identity

    @property
    def server(self) -> ServerAddress:
        return self.end.server


def pilot_targets(jobs: Sequence[NewJob], box: SecretBox) -> list[PilotTarget]:
    """The targets of a prepared batch, opened from the same payloads the workers read."""
    targets = []
    for new in jobs:
        job = joblib.Job.from_json(new.payload)
        assert job.target is not None  # a migration job
        targets.append(
            PilotTarget(
                job.target.kind,
                joblib.open_target(job, box),
                new.mailbox_key,
                job.source.identity,
                job.source.server,
            )
        )
    return targets


def check_resettable(targets: Sequence[PilotTarget]) -> None:
    """Refuse a pilot where emptying a target would empty a source mailbox too."""
    for target in targets:
        if (
            target.identity.lower() == target.source_identity.lower()
            and target.server.host.lower() == target.source_server.host.lower()
        ):
            raise ConfigError(
                f"target {target.identity} on {target.server} is also a source mailbox: "
                "velocity will not empty it"
            )


def reset_targets(store: StateStore, targets: Sequence[PilotTarget]) -> int:
    """Delete every message of every folder of each target, and its checkpoints.

    Returns how many messages were deleted.
    """
    check_resettable(targets)
    deleted = 0
    for target in targets:
        deleted += connector(target.kind).empty_target(target.end)
    store.forget_checkpoints([t.mailbox_key for t in targets])
    return deleted

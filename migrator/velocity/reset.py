"""Empty the pilot's target mailboxes, and forget their checkpoints, between points.

Each measurement point must copy the whole pilot again: the copier skips mail that
is checkpointed, and mail it recognises at the target.  So before a point every
message of every folder of each target mailbox is deleted (UID STORE +FLAGS
\\Deleted, then EXPUNGE; RFC 3501 6.4.6 and 6.4.3) and the checkpoint sets are
dropped.  This destroys mail: the CLI runs it only with
--i-understand-targets-are-emptied, and never where a target is its own source.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from migrator import payload as payloads
from migrator.connectors.imap.connection import connect, imap_errors, logout
from migrator.errors import ConfigError
from migrator.model import ConnectOptions, Credentials, ServerAddress
from migrator.secrets import SecretBox
from migrator.state import NewJob, StateStore

# Folders that hold no messages of their own (cannot be selected).
_NOT_SELECTABLE = {b"\\noselect", b"\\nonexistent"}
_STORE_CHUNK = 1000  # UIDs per STORE: keeps command lines short


@dataclass(frozen=True)
class PilotTarget:
    """A target mailbox of the pilot, as the worker reaches it (TargetSpec.credentials)."""

    identity: str
    server: ServerAddress
    credentials: Credentials
    connect: ConnectOptions
    mailbox_key: str
    source_identity: str
    source_server: ServerAddress


def pilot_targets(jobs: Sequence[NewJob], box: SecretBox) -> list[PilotTarget]:
    """The targets of a prepared batch, opened from the same payloads the workers read."""
    targets = []
    for job in jobs:
        payload = json.loads(job.payload)
        target, source = payload["target"], payload["source"]
        targets.append(
            PilotTarget(
                identity=str(target["identity"]),
                server=payloads.server(target["server"]),
                credentials=payloads.target_credentials(payload, box),
                connect=payloads.connect_options(payload["options"]),
                mailbox_key=job.mailbox_key,
                source_identity=str(source["identity"]),
                source_server=payloads.server(source["server"]),
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
        deleted += _empty_mailbox(target)
    store.forget_checkpoints([t.mailbox_key for t in targets])
    return deleted


def _empty_mailbox(target: PilotTarget) -> int:
    what = f"pilot target mailbox {target.identity}"
    client = connect(target.server, target.credentials, target.connect, what=what)
    deleted = 0
    try:
        with imap_errors(what):
            folders = client.list_folders()
        for flags, _delimiter, name in folders:
            if {f.lower() for f in flags} & _NOT_SELECTABLE:
                continue
            with imap_errors(f"{what}, folder {name!r}"):
                client.select_folder(name)
                uids = client.search("ALL")
                for start in range(0, len(uids), _STORE_CHUNK):
                    client.add_flags(uids[start : start + _STORE_CHUNK], [b"\\Deleted"])
                if uids:
                    client.expunge()
                client.close_folder()
            deleted += len(uids)
    finally:
        logout(client)
    return deleted

"""Sizes and item counts of source mailboxes, as inventory rows (each connector
measures its own: `Connector.survey`).

Per mailbox: LIST, then for each folder that holds messages STATUS (MESSAGES SIZE)
where the server announces STATUS=SIZE (RFC 8438), else SELECT and the sum of
RFC822.SIZE over a FETCH of every message.  Item counts are kept per *target*
folder, as the folder map sends the source folder there ("Sent" -> "Sent Items"),
because the item thresholds the plan warns about are the target's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from migrator.connectors import connector
from migrator.errors import MigrationError
from migrator.foldermap import FolderMap
from migrator.model import ConnectOptions, MailboxJob
from migrator.velocity.plan import InventoryRow


@dataclass(frozen=True)
class SurveyFailure:
    identity: str
    line: int
    error: str


@dataclass(frozen=True)
class Survey:
    rows: tuple[InventoryRow, ...]  # in batch order
    failures: tuple[SurveyFailure, ...]


def survey_batch(
    kind: str,
    jobs: Sequence[MailboxJob],
    options: ConnectOptions,
    folder_map: FolderMap,
    *,
    quotas: Mapping[str, int] | None = None,
    workers: int = 4,
    use_status_size: bool = True,
) -> Survey:
    """Inventory rows for `jobs`, `workers` mailboxes at a time; a mailbox that cannot
    be read becomes a failure and does not stop the others."""

    def one(job: MailboxJob) -> InventoryRow | SurveyFailure:
        try:
            return connector(kind).survey(
                job,
                options,
                folder_map,
                quota=(quotas or {}).get(job.target_identity.lower()),
                use_status_size=use_status_size,
            )
        except MigrationError as exc:
            return SurveyFailure(job.source_identity, job.line, str(exc))

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="survey") as pool:
        results = list(pool.map(one, jobs))
    return Survey(
        rows=tuple(r for r in results if isinstance(r, InventoryRow)),
        failures=tuple(r for r in results if isinstance(r, SurveyFailure)),
    )

"""`migrator check`: log in to each row's source and target before a wave, as a worker
would (the same jobs, opened the same way), and say what is there and why a row is not
ready, like imapsync's --justlogin and Exchange's Test-MigrationServerAvailability."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from migrator import connectors, jobs
from migrator.errors import MigrationError
from migrator.foldermap import FolderMap
from migrator.secrets import SecretBox, exception_text


@dataclass(frozen=True)
class RowCheck:
    """What checking one row found; `problems` say why it is not ready."""

    line: int
    source: str
    target: str
    messages: int | None = None
    size_bytes: int | None = None
    quota_limit: int | None = None
    quota_usage: int | None = None
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def ready(self) -> bool:
        return not self.problems


def check_job(job: jobs.Job, box: SecretBox, folder_map: FolderMap) -> RowCheck:
    """Log in to both ends of `job`; sizes and counts of the source, the target's quota."""
    assert job.target is not None
    problems: list[str] = []
    messages = size = None
    try:
        messages, size = _source(job, box, folder_map)
    except MigrationError as exc:
        problems.append(f"source: {exc}")
    except Exception as exc:  # a server answer no adapter foresaw: this row, not the check
        problems.append(f"source: internal error: {exception_text(exc)}")
    limit = usage = None
    try:
        limit, usage = _target(job, box)
    except MigrationError as exc:
        problems.append(f"target: {exc}")
    except Exception as exc:
        problems.append(f"target: internal error: {exception_text(exc)}")
    notes = []
    if size is not None and limit is not None and size > limit - (usage or 0):
        room = max(0, limit - (usage or 0))
        notes.append(
            f"the target has room for {room / 1e6:.1f} MB of {size / 1e6:.1f} MB: the copy "
            "will stop at its quota with the newest mail in (quota_stopped)"
        )
    return RowCheck(
        job.line, job.source.identity, job.target.identity, messages, size, limit, usage,
        tuple(problems), tuple(notes),
    )  # fmt: skip


def _source(job: jobs.Job, box: SecretBox, folder_map: FolderMap) -> tuple[int | None, int | None]:
    end = jobs.open_source(job, box)
    connector = connectors.connector(job.source.kind)
    if connector.surveys:
        row = connector.survey(end.job, end.connect, folder_map)
        return sum(row.items.values()), row.size_bytes
    # A protocol without a survey: logging in and listing its folders is the check.
    source = connector.open_source(end)
    try:
        source.list_folders()
    finally:
        source.close()
    return None, None


def _target(job: jobs.Job, box: SecretBox) -> tuple[int | None, int | None]:
    assert job.target is not None
    end = jobs.open_target(job, box)
    target = connectors.connector(job.target.kind).open_target(end)
    try:
        quota = target.quota()
    finally:
        target.close()
    return quota.limit, quota.usage


def check_jobs(
    batch: Sequence[jobs.Job],
    box: SecretBox,
    folder_map: FolderMap,
    *,
    parallel: int = 8,
    done: Callable[[RowCheck], None] | None = None,
) -> list[RowCheck]:
    """Every job checked, `parallel` at a time; in batch order.  `done` is told of each
    as it finishes (a progress bar)."""

    def one(job: jobs.Job) -> RowCheck:
        result = check_job(job, box, folder_map)
        if done is not None:
            done(result)
        return result

    with ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="check") as pool:
        return list(pool.map(one, batch))

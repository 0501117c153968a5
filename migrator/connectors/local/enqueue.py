"""What the enqueuing side does for a local source: the root checked, and each row's
path resolved below it (so the mailbox is named by its real path, `file://...`, however
the CSV spells it), a row whose path leads outside the root named by its line."""

from __future__ import annotations

import os
from dataclasses import replace

from migrator.batch import SOURCE_SERVER
from migrator.connectors.local.paths import resolve
from migrator.errors import BadBatchRow, ConfigError, PathOutsideRoot
from migrator.model import BatchResult


def source_root(text: str | None, kind: str) -> str:
    """--source-root as its real path; ConfigError where it is missing or no directory."""
    if not text:
        raise ConfigError(f"--source-type {kind} reads files: give --source-root DIR")
    root = os.path.realpath(text)
    if not os.path.isdir(root):
        raise ConfigError(f"--source-root {text}: not a directory")
    return root


def resolve_batch(result: BatchResult, root: str) -> BatchResult:
    """`result` with each job's path (relative, as the row wrote it) made its real path
    below `root`; a job whose path leads outside becomes a problem of its row."""
    jobs = []
    problems = list(result.problems)
    for job in result.jobs:
        relative = job.source_server.host
        try:
            real = resolve(root, relative, what=f"line {job.line}")
        except PathOutsideRoot:
            problems.append(
                BadBatchRow(
                    job.line,
                    SOURCE_SERVER,
                    "leads outside --source-root (through '..' or a symbolic link)",
                )
            )
            continue
        jobs.append(replace(job, source_server=replace(job.source_server, host=real)))
    problems.sort(key=lambda p: p.line)
    return BatchResult(jobs=tuple(jobs), problems=tuple(problems))

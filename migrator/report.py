"""The states of a mailbox and the outcome of one copy pass (values only)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class MailboxState(enum.StrEnum):
    """Where one mailbox of a batch stands.

    queued -> running -> synced | quota_stopped | failed | not_ready | interrupted | paused
    A pass that ends well leaves the mailbox `synced`, in step with its source and waiting
    for cutover: the first pass (`migrator run`) as each incremental one (`migrator
    sync`); the final pass (`migrator complete`) leaves it `completed`.  `done` is what a
    copy pass itself returns (and what batches of earlier versions kept).  A resume
    re-queues every mailbox whose mail is not in; a paused one (a daily cap reached) goes
    on by itself at its `resume_at`.
    """

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    QUOTA_STOPPED = "quota_stopped"
    FAILED = "failed"
    NOT_READY = "not_ready"
    INTERRUPTED = "interrupted"  # the operator stopped the run (Ctrl-C); resume goes on
    PAUSED = "paused"  # a daily cap (Gmail's) reached: runs again by itself at resume_at
    SYNCED = "synced"  # an incremental pass brought the changes in; waiting for cutover
    COMPLETED = "completed"  # the final pass ran: the mailbox is migrated, never run again

    @property
    def copied(self) -> bool:
        """The mail is in: the first pass, a sync or the final pass ended well."""
        return self in (MailboxState.DONE, MailboxState.SYNCED, MailboxState.COMPLETED)

    @property
    def final(self) -> bool:
        return self not in (MailboxState.QUEUED, MailboxState.RUNNING, MailboxState.PAUSED)


@dataclass(frozen=True)
class SkippedMessage:
    """A message the target refused: named in the report, never silently lost."""

    folder: str
    uid: str
    size: int
    reason: str


@dataclass(frozen=True)
class MailboxResult:
    state: MailboxState
    total_messages: int = 0
    total_bytes: int = 0
    copied_messages: int = 0  # sent in this pass
    copied_bytes: int = 0
    already_messages: int = 0  # checkpointed earlier or recognised at the target
    already_bytes: int = 0
    left_messages: int = 0  # not sent because the quota stopped the mailbox
    left_bytes: int = 0
    skipped: tuple[SkippedMessage, ...] = field(default=())
    error: str | None = None
    # Calendar, contact and task items of an EWS source: uploaded to an EWS target, or
    # counted as skipped where the target (IMAP) cannot hold them.
    copied_non_mail: int = 0
    skipped_non_mail: int = 0
    rewritten_messages: int = 0  # messages whose address headers were rewritten
    rewritten_addresses: int = 0
    unparsable_headers: int = 0  # address headers left as they were: they could not be parsed
    source_seconds: float = 0.0  # time spent waiting on the source, the target, and throttling
    target_seconds: float = 0.0
    throttle_seconds: float = 0.0
    resume_at: float | None = None  # paused: when (epoch seconds) the mailbox goes on
    error_code: str = ""  # the ErrorCode of `error` (errors are grouped by it)
    # What an incremental pass moved beside new mail (migrator.syncpass).
    flag_changes: int = 0  # messages whose flags the target was given anew
    deleted_messages: int = 0  # removed at the target (--propagate-deletes)
    vanished_messages: int = 0  # deleted at the source since the last pass
    new_folders: int = 0
    renamed_folders: int = 0

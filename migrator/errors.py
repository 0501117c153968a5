"""The one exception hierarchy of migrator.

    MigrationError
    ├── ConfigError                 bad command-line options, missing secret key, ...
    ├── BatchError                  a batch or quota CSV that cannot be read at all
    │   └── BadBatchRow             one row is wrong (carries line and column)
    ├── FolderMapError              foldermap.xml invalid or hostile (carries line)
    ├── LockLost                    another worker took the mailbox over; this one stops
    ├── TransientError              worth retrying: reset, timeout, BYE, throttling
    └── PermanentError              retrying will not help; fails one mailbox
        ├── LoginFailed
        ├── FolderRefused           a folder cannot be listed or made; at the target, only
        │                           that folder's mail is skipped
        ├── MessageRefused          the target refused one message; it is skipped
        ├── QuotaExceeded           the target is full; the mailbox is quota_stopped
        ├── MailboxNotReady         the target mailbox cannot be opened
        ├── PayloadTampered         a sealed secret does not open for what the job now says
        ├── BadJob                  a job payload of another version, or malformed
        ├── SourceNotFound          a local source (Maildir, mbox) is not where the row says
        └── PathOutsideRoot         a local source's path leads outside --source-root

Each error says what it is about (mailbox, folder, CSV line) in its message, so a
log line or status row is useful on its own.  No error message ever carries a
password: adapters build messages from server responses, never from commands.
"""

from __future__ import annotations


class MigrationError(Exception):
    """Base class of every error migrator raises on purpose."""


class ConfigError(MigrationError):
    """An option, environment variable or configuration file is wrong."""


class BatchError(MigrationError):
    """A batch or activation CSV cannot be read at all (encoding, header)."""


class BadBatchRow(BatchError):
    """One CSV row is wrong; `line` is the 1-based physical line in the file."""

    def __init__(self, line: int, column: str, problem: str) -> None:
        self.line = line
        self.column = column
        self.problem = problem
        super().__init__(f"line {line}, column {column}: {problem}")


class FolderMapError(MigrationError):
    """foldermap.xml is invalid, or hostile (entities, DTD, network)."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else path
        super().__init__(f"{where}: {problem}")


class LockLost(MigrationError):
    """The mailbox lock expired and another worker holds it now: this worker stops at
    once and records nothing, so two workers never copy one mailbox side by side."""


class TransientError(MigrationError):
    """A failure that may go away: connection reset, timeout, BYE, throttling."""


class PermanentError(MigrationError):
    """A failure that retrying will not fix; it fails one mailbox, not the batch."""


class LoginFailed(PermanentError):
    """The server refused the credentials (the message never holds the password)."""


class FolderRefused(PermanentError):
    """A folder cannot be listed, selected or created.  A target folder refused is that
    folder's failure alone: its messages are skipped and named, the other folders go on."""


class MessageRefused(PermanentError):
    """The target refused one message (too big, bad content); it is skipped and counted."""


class QuotaExceeded(PermanentError):
    """The target mailbox is full (RFC 5530 [OVERQUOTA], or the planned budget ran out)."""


class MailboxNotReady(PermanentError):
    """The target mailbox does not exist or cannot be opened ("not ready to migrate")."""


class PayloadTampered(PermanentError):
    """A job payload was changed after it was enqueued: a sealed secret does not open for
    the server, login or TLS options the payload now names (someone wrote to Redis without
    the key).  The mailbox fails before anything is sent to any server."""

    code = "TAMPERED"


class BadJob(PermanentError):
    """A job payload this worker cannot read: another version (enqueued by an earlier or
    later migrator), or malformed.  The mailbox fails saying which; nothing is sent."""

    code = "BAD_JOB"


class SourceNotFound(PermanentError):
    """A local source (a Maildir or mbox path below --source-root) does not exist."""

    code = "NONEXISTENT"  # RFC 5530


class PathOutsideRoot(PermanentError):
    """A local source's path is absolute, or leads (through `..` or a symbolic link)
    outside the directory the operator allowed with --source-root: nothing is read."""

    code = "NOPERM"  # RFC 5530

"""The one exception hierarchy of migrator.

    MigrationError
    ├── ConfigError                 bad command-line options, missing secret key, ...
    ├── BatchError                  a batch or quota CSV that cannot be read at all
    │   └── BadBatchRow             one row is wrong (carries line and column)
    ├── FolderMapError              foldermap.xml invalid or hostile (carries line)
    ├── LockLost                    another worker took the mailbox over; this one stops
    ├── CapReached                  a daily cap (Gmail's bandwidth) is reached: the mailbox
    │                               pauses until `resume_at` and goes on by itself
    ├── TransientError              worth retrying: reset, timeout, BYE, throttling
    │   └── TokenServiceUnavailable an OAuth token service cannot be reached
    └── PermanentError              retrying will not help; fails one mailbox
        ├── LoginFailed
        │   └── TokenRefused        an OAuth token the service would not issue, or the
        │                           server would not take even fresh (says what to grant)
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

Each error also carries a `code` (an ErrorCode), set where a library's error becomes
ours: one function per library (imapconn.imap_error, pop3.pop_error, ewsaccount.translate,
managesieve.sieve_error) reads the server's response code there.  Everyone else decides
by class and code, never by the message text.  Without a code given, an error has its
class's: CONFIG, BATCH, FOLDERMAP, LOCKLOST, TRANSIENT, REFUSED (PermanentError,
FolderRefused, MessageRefused), AUTHENTICATIONFAILED, TOKENREFUSED, TOKENSERVICE, OVERQUOTA,
NOTREADY, TAMPERED, DAILYCAP.
"""

from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):  # noqa: UP042  (str, Enum) as the rest of migrator
    """What went wrong, in words a caller branches on.  An IMAP server's RFC 5530 code keeps
    its name; the other protocols' codes are mapped onto the same words."""

    # Retrying may help (TransientError).
    TRANSIENT = "TRANSIENT"  # worth another pass, no more said (UIDVALIDITY changed, ...)
    CONNECTION = "CONNECTION"  # reset, timeout, TLS alert, BYE, closed mid-answer
    CONNREFUSED = "CONNREFUSED"  # nothing listens on the port (ECONNREFUSED)
    UNAVAILABLE = "UNAVAILABLE"  # RFC 5530: a part of the server is down for now
    INUSE = "INUSE"  # RFC 5530: another session holds the mailbox (POP3 [IN-USE])
    SERVERBUG = "SERVERBUG"  # RFC 5530
    THROTTLED = "THROTTLED"  # the server asks for fewer or slower requests
    LIMIT = "LIMIT"  # RFC 5530: a server limit; at APPEND, this message is too big
    TOKENSERVICE = "TOKENSERVICE"  # an OAuth 2.0 token service cannot be reached
    # Retrying will not help (PermanentError).
    REFUSED = "REFUSED"  # the server said no, with no code this tool knows
    AUTHENTICATIONFAILED = "AUTHENTICATIONFAILED"  # RFC 5530: wrong login or password
    AUTHORIZATIONFAILED = "AUTHORIZATIONFAILED"  # RFC 5530: the admin may not act as the user
    OVERQUOTA = "OVERQUOTA"  # RFC 5530
    TOKENREFUSED = "TOKENREFUSED"  # OAuth 2.0: no token issued, or a fresh one refused
    ALREADYEXISTS = "ALREADYEXISTS"  # RFC 5530: a folder (or script) of that name exists
    NONEXISTENT = "NONEXISTENT"  # RFC 5530 (and RFC 3501 TRYCREATE): no such folder
    NOTREADY = "NOTREADY"  # the target mailbox cannot be opened
    CERTIFICATE = "CERTIFICATE"  # the server's TLS certificate is not trusted
    NOTLS = "NOTLS"  # the server offers no TLS and plaintext was not allowed
    PROTOCOL = "PROTOCOL"  # an answer that is not the protocol
    TAMPERED = "TAMPERED"  # a sealed secret does not open for what the payload says
    BADJOB = "BADJOB"  # a job payload of another version, or malformed
    NOPERM = "NOPERM"  # RFC 5530: not allowed (a local path outside --source-root)
    # Not from a server.
    CONFIG = "CONFIG"
    BATCH = "BATCH"
    FOLDERMAP = "FOLDERMAP"
    LOCKLOST = "LOCKLOST"
    DAILYCAP = "DAILYCAP"  # a daily bandwidth cap (Gmail's) reached: paused, not failed


class MigrationError(Exception):
    """Base class of every error migrator raises on purpose (always as a subclass).  `code`
    is the class's own unless the raiser gives a more precise one."""

    code: ErrorCode

    def __init__(self, *args: object, code: ErrorCode | None = None) -> None:
        super().__init__(*args)
        if code is not None:
            self.code = code


class ConfigError(MigrationError):
    """An option, environment variable or configuration file is wrong."""

    code = ErrorCode.CONFIG


class BatchError(MigrationError):
    """A batch or activation CSV cannot be read at all (encoding, header)."""

    code = ErrorCode.BATCH


class BadBatchRow(BatchError):
    """One CSV row is wrong; `line` is the 1-based physical line in the file."""

    def __init__(self, line: int, column: str, problem: str) -> None:
        self.line = line
        self.column = column
        self.problem = problem
        super().__init__(f"line {line}, column {column}: {problem}")


class FolderMapError(MigrationError):
    """foldermap.xml is invalid, or hostile (entities, DTD, network)."""

    code = ErrorCode.FOLDERMAP

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        where = f"{path}, line {line}" if line else path
        super().__init__(f"{where}: {problem}")


class LockLost(MigrationError):
    """The mailbox lock expired and another worker holds it now: this worker stops at
    once and records nothing, so two workers never copy one mailbox side by side."""

    code = ErrorCode.LOCKLOST


class CapReached(MigrationError):
    """A daily cap on the bytes read from or written to a mailbox (Gmail's) is reached,
    or the server cut the session off as it does past its own: not a failure, and not
    worth another pass now.  The mailbox pauses until `resume_at` (epoch seconds), with
    what was sent checkpointed, and resumes by itself."""

    code = ErrorCode.DAILYCAP

    def __init__(self, message: str, resume_at: float) -> None:
        super().__init__(message)
        self.resume_at = resume_at


class TransientError(MigrationError):
    """A failure that may go away: connection reset, timeout, BYE, throttling."""

    code = ErrorCode.TRANSIENT


class PermanentError(MigrationError):
    """A failure that retrying will not fix; it fails one mailbox, not the batch."""

    code = ErrorCode.REFUSED


class LoginFailed(PermanentError):
    """The server refused the credentials (the message never holds the password)."""

    code = ErrorCode.AUTHENTICATIONFAILED


class TokenRefused(LoginFailed):
    """OAuth 2.0: the token service would not issue a token, or the server refused a
    fresh one.  The message says what the operator can grant or fix; never the token."""

    code = ErrorCode.TOKENREFUSED


class TokenServiceUnavailable(TransientError):
    """OAuth 2.0: the token service could not be reached (down, timeout, TLS)."""

    code = ErrorCode.TOKENSERVICE


class FolderRefused(PermanentError):
    """A folder cannot be listed, selected or created.  A target folder refused is that
    folder's failure alone: its messages are skipped and named, the other folders go on."""


class MessageRefused(PermanentError):
    """The target refused one message (too big, bad content); it is skipped and counted."""


class QuotaExceeded(PermanentError):
    """The target mailbox is full (RFC 5530 [OVERQUOTA], or the planned budget ran out)."""

    code = ErrorCode.OVERQUOTA


class MailboxNotReady(PermanentError):
    """The target mailbox does not exist or cannot be opened ("not ready to migrate")."""

    code = ErrorCode.NOTREADY


class PayloadTampered(PermanentError):
    """A job payload was changed after it was enqueued: a sealed secret does not open for
    the server, login or TLS options the payload now names (someone wrote to Redis without
    the key).  The mailbox fails before anything is sent to any server."""

    code = ErrorCode.TAMPERED


class BadJob(PermanentError):
    """A job payload this worker cannot read: another version (enqueued by an earlier or
    later migrator), or malformed.  The mailbox fails saying which; nothing is sent."""

    code = ErrorCode.BADJOB


class SourceNotFound(PermanentError):
    """A local source (a Maildir or mbox path below --source-root) does not exist."""

    code = ErrorCode.NONEXISTENT


class PathOutsideRoot(PermanentError):
    """A local source's path is absolute, or leads (through `..` or a symbolic link)
    outside the directory the operator allowed with --source-root: nothing is read."""

    code = ErrorCode.NOPERM

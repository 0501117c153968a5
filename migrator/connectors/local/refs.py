"""What the Maildir and mbox sources share: stable checkpoint ids, arrival dates, the
header block of a message read from a file, reading messages and their heads by ref
(FileReads), and the errors of the file system."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import zlib
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime

from migrator.errors import PermanentError, SourceNotFound, TransientError
from migrator.headers import message_fields, parse_date
from migrator.model import MailboxJob
from migrator.plan import MessageRef, is_sane
from migrator.recognition import header_end

# A header block past this is not mail any client wrote: the listing reads this much, and
# a message whose header runs on is read whole where its header block is needed.
HEAD_BYTES = 64 * 1024


def checkpoint_id(text: str) -> str:
    """A stable id for a checkpoint, from a file's unique name or a key: a digest, since a
    file name need not be UTF-8 (Redis keeps text)."""
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def folder_uidvalidity(kind: str, name: str) -> int:
    """A folder's UIDVALIDITY: its ids never change meaning, so one fixed value per
    folder, non-zero and 32-bit as IMAP's."""
    return zlib.crc32(f"{kind}:{name}".encode("utf-8", "surrogateescape")) or 1


def arrival(
    stamp: datetime | None,
    received: datetime | None,
    date_header: datetime | None,
    now: datetime,
) -> datetime | None:
    """The INTERNALDATE a message gets: the date the file keeps (a Maildir file's mtime,
    an mbox From_ line's date) where it is sane.  Where it is missing or absurd (a
    restore dated 1970) and a header date is sane, None: the copier then takes the newest
    Received date, else the Date field (MessageRef.append_date), as for an IMAP source
    whose INTERNALDATE is absurd.  Else the file's date, whatever it is."""
    if stamp is not None and is_sane(stamp, now):
        return stamp
    if any(d is not None and is_sane(d, now) for d in (received, date_header)):
        return None
    return stamp


def message_ref(
    *,
    folder: str,
    uidvalidity: int,
    uid: str,
    size: int,
    stamp: datetime | None,
    head: bytes,
    flags: tuple[str, ...],
    now: datetime,
) -> MessageRef:
    """The listing of one message: what the copier plans, orders and names it by."""
    message_id, date_text, received = message_fields(head)
    date_header = parse_date(date_text)
    return MessageRef(
        folder=folder,
        uidvalidity=uidvalidity,
        uid=uid,
        size=size,
        internaldate=arrival(stamp, received, date_header, now),
        date_header=date_header,
        flags=flags,
        message_id=message_id,
        received=received,
    )


def header_block(data: bytes) -> bytes | None:
    """The header block `data` starts with, and the empty line after it; None when
    `data` holds no empty line (the whole message is needed then)."""
    end = header_end(data)
    if end is None:
        return None
    return data[: end + (2 if data[end : end + 2] == b"\r\n" else 1)]


class FileReads:
    """fetch and heads of a source that reads each message from a file by its ref;
    `_read(ref, limit)` gives the message's bytes (about its first `limit` of them), or
    None where it is gone since the listing."""

    def _read(self, ref: MessageRef, limit: int | None) -> bytes | None:
        raise NotImplementedError

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            data = self._read(ref, None)
            if data is not None:
                yield ref, data

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            start = self._read(ref, HEAD_BYTES)
            if start is None:
                continue
            head = header_block(start)
            # No empty line in the start: the message is all header, or its header runs
            # on past HEAD_BYTES; either way the whole message, as recognition expects.
            data = head if head is not None else self._read(ref, None)
            if data is not None:
                yield ref, data


def describe(job: MailboxJob) -> str:
    """How errors name a local mailbox: its identity, CSV line and path."""
    return f"source mailbox {job.source_identity} (line {job.line}, {job.source_server.host})"


@contextlib.contextmanager
def os_errors(what: str) -> Iterator[None]:
    """The file system's errors -> ours, at one spot: a file or directory gone is
    SourceNotFound, one we may not read a PermanentError (retrying will not help), and
    anything else (an I/O error on a network share) a TransientError, worth a pass."""
    try:
        yield
    except FileNotFoundError as exc:
        raise SourceNotFound(f"{what}: {exc.filename} does not exist") from exc
    except PermissionError as exc:
        raise PermanentError(f"{what}: no permission to read {exc.filename}") from exc
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ELOOP):
            raise PermanentError(f"{what}: {exc.strerror}: {exc.filename}") from exc
        raise TransientError(f"{what}: {exc.strerror or exc}: {exc.filename}") from exc


def unique_name(name: str, taken: Collection[str]) -> str:
    """`name`, or where another folder has it already (".INBOX" beside a Maildir's own
    Inbox, a Thunderbird `Name` beside an Apple Mail `Name.mbox`), `name (2)`, ..."""
    if name not in taken:
        return name
    number = 2
    while f"{name} ({number})" in taken:
        number += 1
    return f"{name} ({number})"

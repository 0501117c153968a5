"""mbox: From_ lines, "From " escaping, status headers, and the streaming index of a
file (pure: bytes or a binary file in, values out).

An mbox file is messages one after the other, each starting with a From_ line ("From "
at the start of a line, then the envelope sender and an asctime date) and followed by
an empty line.  A body line that starts with "From " was written with a ">" before it;
how lines that already started with ">From " were written depends on the variant
(`MboxFormat`).  Every line that starts with "From " is a From_ line: that is what the
escaping is for, and a file whose writer did not escape (an "unmunged" export) splits
there, as every mbox reader splits it.

A message's bytes are the file's, from the line after its From_ line to the end of its
last line, with the escaping undone; the empty line before the next From_ line (or at
the end of the file) is the separator, not the message's.  The header fields that hold
state (Status, X-Status, X-Mozilla-Status, X-Keywords) become flags and stay in the
bytes as the file holds them: a copy is the message as the file has it, and its flags
are set on the target as well.  LF and CRLF files are read alike.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import BinaryIO

from migrator.connectors.local.settings import MboxFormat
from migrator.headers import read_fields

FROM_ = b"From "
_BOM = b"\xef\xbb\xbf"  # a UTF-8 byte order mark before the first From_ line (Windows tools)
_EMPTY = (b"\n", b"\r\n")
# A line that loses one ">" when read: mboxrd escapes every ">*From ", mboxo only "From ".
_ESCAPED = {
    MboxFormat.MBOXRD: re.compile(rb">+From "),
    MboxFormat.MBOXO: re.compile(rb">From "),
}
_UNESCAPE = {
    MboxFormat.MBOXRD: re.compile(rb"^>(>*From )", re.MULTILINE),
    MboxFormat.MBOXO: re.compile(rb"^>(From )", re.MULTILINE),
}
# The header block kept for the listing, at most; the rest of a longer one is not read.
MAX_HEAD = 64 * 1024

_MONTHS = {
    m: i for i, m in enumerate(b"jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)
}
# "Mon Jun  3 12:50:27 1996", as ctime() writes it, with the zone some writers add
# before or after the year ("... 12:50:27 PDT 1996", "... 1996 +0200").
_ASCTIME = re.compile(
    rb"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun),?\s+([A-Za-z]{3})\s+(\d{1,2})\s+"
    rb"(\d{1,2}):(\d{2})(?::(\d{2}))?(?:\s+([A-Za-z]{1,5}|[+-]\d{4}))?\s+(\d{4})"
    rb"(?:\s+([+-]\d{4}))?"
)
# RFC 5322 4.3 obsolete zone names; any other name is read as UTC.
_ZONES = {
    b"UT": 0, b"UTC": 0, b"GMT": 0, b"Z": 0,
    b"EST": -5, b"EDT": -4, b"CST": -6, b"CDT": -5,
    b"MST": -7, b"MDT": -6, b"PST": -8, b"PDT": -7,
}  # fmt: skip


def from_line_date(line: bytes) -> datetime | None:
    """The date of a From_ line, or None where it has none that reads (Thunderbird
    writes "From - " alone at times).  Without a zone, the date is taken as UTC: the
    writer's local time is not known, and UTC is what a worker runs in."""
    found = _ASCTIME.search(line)
    if found is None:
        return None
    month_name, day, hour, minute, second, zone, year, offset = found.groups()
    month = _MONTHS.get(month_name.lower())
    if month is None:
        return None
    try:
        naive = datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return None
    return naive.replace(tzinfo=_zone(offset or zone))


def _zone(text: bytes | None) -> timezone:
    if text is None:
        return UTC
    if text[:1] in (b"+", b"-"):
        minutes = int(text[1:3]) * 60 + int(text[3:5])
        return timezone(timedelta(minutes=-minutes if text[:1] == b"-" else minutes))
    return timezone(timedelta(hours=_ZONES.get(text.upper(), 0)))


def unescape(data: bytes, fmt: MboxFormat) -> bytes:
    """`data` (whole lines of one message) with the From-escaping undone."""
    return _UNESCAPE[fmt].sub(rb"\1", data)


def escape(data: bytes, fmt: MboxFormat) -> bytes:
    """What a writer of `fmt` puts in the file for the message `data`: the inverse of
    `unescape` (for mboxo, only of messages without `>From ` lines)."""
    pattern = rb"^(>*From )" if fmt is MboxFormat.MBOXRD else rb"^(From )"
    return re.sub(pattern, rb">\1", data, flags=re.MULTILINE)


# -- flags --------------------------------------------------------------------------------

_STATUS = {"R": "\\Seen"}  # O (old: no longer \Recent) has no flag to carry
_X_STATUS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
# Thunderbird's X-Mozilla-Status bits: read, replied, marked, expunged (not compacted yet).
_MOZILLA_BITS = ((0x1, "\\Seen"), (0x2, "\\Answered"), (0x4, "\\Flagged"), (0x8, "\\Deleted"))
_STATE_FIELDS = ("status", "x-status", "x-mozilla-status", "x-keywords", "x-mozilla-keys")


def status_flags(head: bytes) -> tuple[str, ...]:
    """The flags a header block's state fields give: Status (R: \\Seen), X-Status (A:
    \\Answered, F: \\Flagged, T: \\Draft, D: \\Deleted), Thunderbird's X-Mozilla-Status
    bits, and the keywords of X-Keywords (Dovecot, mutt) and X-Mozilla-Keys."""
    found = read_fields(head, _STATE_FIELDS)
    flags: list[str] = []

    def add(new: Iterable[str]) -> None:
        flags.extend(f for f in new if f not in flags)

    for value in found.get("status", []):
        add(_STATUS[c] for c in value if c in _STATUS)
    for value in found.get("x-status", []):
        add(_X_STATUS[c] for c in value if c in _X_STATUS)
    for value in found.get("x-mozilla-status", []):
        try:
            bits = int(value.strip(), 16)
        except ValueError:
            continue
        add(flag for bit, flag in _MOZILLA_BITS if bits & bit)
    for name in ("x-keywords", "x-mozilla-keys"):
        for value in found.get(name, []):
            add(w for w in value.replace(",", " ").split() if _is_keyword(w))
    return tuple(flags)


def _is_keyword(word: str) -> bool:
    return (
        word.isascii()
        and not word.startswith("\\")
        and all(c > " " and c not in '(){%*"\\]' and c != "\x7f" for c in word)
    )


# Fields a mail client rewrites in place as the state of a message changes: left out of
# the key a message's checkpoint id is made of, so the id survives a flag change.
_VOLATILE = frozenset(
    (
        *_STATE_FIELDS,
        "x-mozilla-status2",
        "x-uid",
        "x-imap",
        "x-imapbase",
        "content-length",
        "lines",
    )
)


def stable_key(head: bytes) -> str:
    """A digest of the header block `head` without its state fields, line ends
    normalised: the same for one message however its flags change."""
    kept: list[bytes] = []
    skipping = False
    for line in head.replace(b"\r\n", b"\n").split(b"\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower()
        skipping = b":" in line and name.decode("ascii", "replace") in _VOLATILE
        if not skipping:
            kept.append(line)
    return hashlib.sha256(b"\n".join(kept).rstrip(b"\n")).hexdigest()


# -- the index ----------------------------------------------------------------------------


class NotAnMbox(ValueError):
    """The file does not start with a From_ line (after empty lines)."""


@dataclass(frozen=True, slots=True)
class MboxEntry:
    """Where one message lies in the file."""

    start: int  # offset of its first byte, on the line after its From_ line
    end: int  # offset just past its last byte, the separator excluded
    escaped: int  # its lines that lose a ">" when read
    from_date: datetime | None

    @property
    def size(self) -> int:
        """Its size as read, escaping undone."""
        return self.end - self.start - self.escaped


@dataclass
class _Open:
    start: int
    from_date: datetime | None
    escaped: int = 0
    head: list[bytes] = field(default_factory=list)
    head_bytes: int = 0
    in_head: bool = True

    def add_to_head(self, line: bytes) -> None:
        if line in _EMPTY or self.head_bytes + len(line) > MAX_HEAD:
            self.in_head = False
        if self.head_bytes + len(line) <= MAX_HEAD:
            self.head.append(line)
            self.head_bytes += len(line)

    def close(self, end: int, fmt: MboxFormat) -> tuple[MboxEntry, bytes]:
        entry = MboxEntry(self.start, max(end, self.start), self.escaped, self.from_date)
        head = unescape(b"".join(self.head), fmt)
        return entry, head[: entry.size]


def index_mbox(handle: BinaryIO, fmt: MboxFormat) -> Iterator[tuple[MboxEntry, bytes]]:
    """Each message of the mbox file `handle` (read from its start, once, line by line:
    a file of any size in little memory), with its header block as read.  Raises
    NotAnMbox when something other than empty lines comes before the first From_ line."""
    escaped = _ESCAPED[fmt]
    offset = 0
    current: _Open | None = None
    separator = 0  # the length of the line before, when it was empty
    for line in handle:
        if line.startswith(FROM_) or (offset == 0 and line.startswith(_BOM + FROM_)):
            if current is not None:
                yield current.close(offset - separator, fmt)
            current = _Open(offset + len(line), from_line_date(line))
        elif current is not None:
            if current.in_head:
                current.add_to_head(line)
            if line[:1] == b">" and escaped.match(line):
                current.escaped += 1
        elif line.strip():
            raise NotAnMbox(f"no From_ line before byte {offset}: not an mbox file")
        separator = len(line) if line in _EMPTY else 0
        offset += len(line)
    if current is not None:
        yield current.close(offset - separator, fmt)


def looks_like_mbox(start: bytes) -> bool:
    """Whether a file that starts with `start` is an mbox file: empty (a folder without
    mail), or a From_ line after any empty lines."""
    rest = start.removeprefix(_BOM).lstrip(b"\r\n")
    return not rest or rest.startswith(FROM_)

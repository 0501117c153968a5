"""The FETCH responses of a folder listing, read fast (pure: imaplib's data in, values out).

Listing a folder asks each message for UID, INTERNALDATE, RFC822.SIZE, FLAGS and the
Message-ID and Date header fields.  imapclient's general parser reads those answers a
character at a time and was the larger part of the copier's CPU on a mailbox of small
messages.  This reader takes the usual answer (items in the order asked, the header lines
as a literal) with one regular expression, and any other with a tokeniser of one regular
expression per token: about an eighth of imapclient's CPU, then a third.  It reads the
answers of that one request and nothing else: for anything it does not expect it returns
None, and the caller falls back to imapclient's parser.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import NamedTuple

from migrator.headers import message_fields
from migrator.plan import MessageRef

# RFC 3501 FETCH items of the listing, as sent.
LISTING_ITEMS = "(UID INTERNALDATE RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)])"
FIELDS_ITEM = b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"
# Without the header fields: what a listing asks where it needs neither (no RFC 6154 \All
# view to tell apart by Message-ID; the Date header is read only for the few messages
# whose INTERNALDATE is missing or absurd).  Dovecot answers it from its index alone.
BARE_ITEMS = "(UID INTERNALDATE RFC822.SIZE FLAGS)"
# The same with the whole header block: a target folder's index, for recognition.
INDEX_ITEMS = "(UID INTERNALDATE RFC822.SIZE FLAGS BODY.PEEK[HEADER])"
HEADER_ITEM = b"BODY[HEADER]"

RawFetch = Sequence[bytes | tuple[bytes, bytes] | None]
"""imaplib's untagged FETCH data: a line, or (a line ending in a literal's {n}, the
literal), the line after a literal coming as the next element."""


class Listed(NamedTuple):
    """One message of a listing (a tuple: a listing makes one for each message)."""

    uid: int
    size: int
    internaldate: datetime | None
    flags: tuple[str, ...]
    fields: bytes | None  # the header lines asked for (the item's literal), as given


_TOKEN = re.compile(
    rb"""[ ]*(?:
        (?P<open>\() | (?P<close>\)) |
        "(?P<quoted>(?:[^"\\\r\n]|\\["\\])*)" |
        \{(?P<literal>[0-9]+)\+?\}$ |
        (?P<atom>[^ ()"{\[\]\x00-\x1f\x7f]+(?:\[[^\]\r\n]*\][^ ()"{\[\]\x00-\x1f\x7f]*)?)
    )""",
    re.VERBOSE,
)
_OPEN, _CLOSE = object(), object()  # parentheses in the token stream
# Atoms are bytes in the stream; strings (quoted or literal) are ("s", bytes).

# RFC 3501 date-time: "17-Jul-1996 02:44:25 -0700", the day perhaps space-padded.
_INTERNALDATE = re.compile(
    rb"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) "
    rb"([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


class _Unexpected(Exception):
    pass


def parse_listing(data: RawFetch, item: bytes | None = FIELDS_ITEM) -> dict[int, Listed] | None:
    """The messages of a listing FETCH by UID (`item`: the header item asked for, as the
    server names it in the answer; None: BARE_ITEMS), or None where the data holds anything
    this reader does not expect (the caller then uses a general parser)."""
    try:
        if item is None:
            usual = _bare(data)
            return usual if usual is not None else _parse(_tokens(data), b"")
        usual = _usual(data, _usual_pattern(item))
        return usual if usual is not None else _parse(_tokens(data), item)
    except _Unexpected:
        return None


# The answer Dovecot (and most servers) give for each message, items in the order asked,
# the header lines as a literal: read with one match rather than token by token.
@functools.cache
def _usual_pattern(item: bytes) -> re.Pattern[bytes]:
    return re.compile(
        rb'[0-9]+ \(UID ([0-9]+) INTERNALDATE "([^"\\\r\n]*)" RFC822\.SIZE ([0-9]+) '
        rb"FLAGS \(([^()\"{}\[\]\x00-\x1f\x7f]*)\) " + re.escape(item) + rb" \{[0-9]+\}"
    )


def literal_answers(data: RawFetch) -> list[tuple[bytes, bytes]] | None:
    """Each answer's line and literal where every answer is one line ending in a literal
    and then `)` (the usual form of a FETCH of one literal item), else None."""
    elements = [e for e in data if e is not None]
    if len(elements) % 2:
        return None
    answers: list[tuple[bytes, bytes]] = []
    for index in range(0, len(elements), 2):
        element, trailer = elements[index], elements[index + 1]
        if not isinstance(element, tuple) or trailer != b")":
            return None
        answers.append(element)
    return answers


def _usual(data: RawFetch, usual: re.Pattern[bytes]) -> dict[int, Listed] | None:
    """The listing where every answer has the usual form, else None."""
    found: dict[int, Listed] = {}
    answers = literal_answers(data)
    if answers is None:
        return None
    for element in answers:
        match = usual.fullmatch(element[0])
        if match is None:
            return None
        uid_text, date, size, flags = match.groups()
        uid = int(uid_text)
        if uid in found:
            return None  # two answers for one message: the general reading merges them
        found[uid] = Listed(
            uid=uid,
            size=int(size),
            internaldate=_internaldate(("s", date)),
            flags=_flags(flags),
            fields=element[1],
        )
    return found


_BARE = re.compile(
    rb'[0-9]+ \(UID ([0-9]+) INTERNALDATE "([^"\\\r\n]*)" RFC822\.SIZE ([0-9]+) '
    rb"FLAGS \(([^()\"{}\[\]\x00-\x1f\x7f]*)\)\)"
)


def _lines_matching(data: RawFetch, pattern: re.Pattern[bytes]) -> list[re.Match[bytes]] | None:
    """Each answer's match of `pattern` where every answer is one line that matches it
    whole, else None."""
    matches: list[re.Match[bytes]] = []
    for element in data:
        if element is None:
            continue
        if not isinstance(element, bytes):
            return None
        match = pattern.fullmatch(element)
        if match is None:
            return None
        matches.append(match)
    return matches


def _bare(data: RawFetch) -> dict[int, Listed] | None:
    """A BARE_ITEMS listing where every answer has the usual form (one line each, the
    items in the order asked), else None."""
    matches = _lines_matching(data, _BARE)
    if matches is None:
        return None
    found: dict[int, Listed] = {}
    for match in matches:
        uid_text, date, size, flags = match.groups()
        uid = int(uid_text)
        if uid in found:
            return None
        found[uid] = Listed(
            uid=uid,
            size=int(size),
            internaldate=_internaldate(("s", date)),
            flags=_flags(flags),
            fields=None,
        )
    return found


# A flags FETCH's usual answer: UID and FLAGS as asked, and the MODSEQ that CHANGEDSINCE
# adds (RFC 7162).
_FLAGS_ONLY = re.compile(
    rb"[0-9]+ \(UID ([0-9]+) FLAGS \(([^()\"{}\[\]\x00-\x1f\x7f]*)\)(?: MODSEQ \([0-9]+\))?\)"
)


def parse_flags(data: RawFetch) -> dict[int, tuple[str, ...]] | None:
    """The flags of a `(UID FLAGS)` FETCH by UID where every answer has the usual form
    (one line each: an incremental pass's changes, or a folder's every flag), else None
    (the caller then uses a general parser): imapclient's reads a hundred changed
    flags in several milliseconds of CPU."""
    matches = _lines_matching(data, _FLAGS_ONLY)
    if matches is None:
        return None
    found: dict[int, tuple[str, ...]] = {}
    for match in matches:
        uid = int(match[1])
        if uid in found:
            return None  # two answers for one message: the general reading merges them
        found[uid] = _flags(match[2])
    return found


def _tokens(data: RawFetch) -> list[object]:
    tokens: list[object] = []
    for element in data:
        if element is None:
            continue
        if isinstance(element, tuple):
            line, literal = element
            _tokenise(line, tokens, ends_in_literal=True)
            tokens.append(("s", literal))
        else:
            _tokenise(element, tokens, ends_in_literal=False)
    return tokens


def _tokenise(line: bytes, tokens: list[object], *, ends_in_literal: bool) -> None:
    position = 0
    saw_literal = False
    while position < len(line):
        match = _TOKEN.match(line, position)
        if match is None or match.end() == position:
            if line[position:].strip(b" ") == b"":
                break
            raise _Unexpected
        position = match.end()
        kind = match.lastgroup
        if kind == "open":
            tokens.append(_OPEN)
        elif kind == "close":
            tokens.append(_CLOSE)
        elif kind == "quoted":
            text = match.group("quoted")
            if b"\\" in text:
                text = re.sub(rb"\\(.)", rb"\1", text)
            tokens.append(("s", text))
        elif kind == "literal":
            saw_literal = True
        else:
            tokens.append(match.group("atom"))
    if saw_literal != ends_in_literal:
        raise _Unexpected


def _parse(tokens: list[object], item: bytes) -> dict[int, Listed]:
    found: dict[int, dict[bytes, object]] = {}
    index = 0
    while index < len(tokens):
        sequence = tokens[index]
        if not (isinstance(sequence, bytes) and sequence.isdigit()):
            raise _Unexpected
        if index + 1 >= len(tokens) or tokens[index + 1] is not _OPEN:
            raise _Unexpected
        index += 2
        items: dict[bytes, object] = {}
        while True:
            if index >= len(tokens):
                raise _Unexpected
            name = tokens[index]
            if name is _CLOSE:
                index += 1
                break
            if not isinstance(name, bytes):
                raise _Unexpected
            value, index = _value(tokens, index + 1)
            items[name.upper()] = value
        uid = items.get(b"UID")
        if uid is None:
            continue  # an unsolicited update (FLAGS of a message changed meanwhile)
        if not (isinstance(uid, bytes) and uid.isdigit()):
            raise _Unexpected
        found.setdefault(int(uid), {}).update(items)
    return {uid: _listed(uid, items, item) for uid, items in found.items()}


def _value(tokens: list[object], index: int) -> tuple[object, int]:
    if index >= len(tokens):
        raise _Unexpected
    token = tokens[index]
    if token is _OPEN:
        members: list[object] = []
        index += 1
        while True:
            if index >= len(tokens):
                raise _Unexpected
            if tokens[index] is _CLOSE:
                return members, index + 1
            member, index = _value(tokens, index)
            members.append(member)
    if token is _CLOSE:
        raise _Unexpected
    return token, index + 1


def _listed(uid: int, items: dict[bytes, object], item: bytes) -> Listed:
    size = items.get(b"RFC822.SIZE")
    if not (isinstance(size, bytes) and size.isdigit()):
        raise _Unexpected
    flags = items.get(b"FLAGS", [])
    if not isinstance(flags, list) or not all(isinstance(f, bytes) for f in flags):
        raise _Unexpected
    return Listed(
        uid=uid,
        size=int(size),
        internaldate=_internaldate(items.get(b"INTERNALDATE")),
        flags=tuple(f.decode("utf-8", "replace") for f in flags if isinstance(f, bytes)),
        fields=_string(items.get(item)),
    )


def _string(value: object) -> bytes | None:
    """A string's bytes (quoted or literal), or None for NIL or nothing."""
    if value is None or value == b"NIL":
        return None
    if isinstance(value, tuple) and isinstance(value[1], bytes):
        return value[1]
    raise _Unexpected


def _internaldate(value: object) -> datetime | None:
    """RFC 3501 date-time ("17-Jul-1996 02:44:25 -0700") with its own offset; None
    where missing, NIL or not in that form (imapclient gives no datetime then either,
    and the copier falls back to the Date header)."""
    text = _string(value)
    if text is None:
        return None
    match = _INTERNALDATE.fullmatch(text)
    if match is None:
        raise _Unexpected  # odd but perhaps readable: the general parser decides
    day, month, year, hour, minute, second, sign, tz_hours, tz_minutes = match.groups()
    month_number = _MONTHS.get(month.decode("ascii").lower())
    if month_number is None:
        raise _Unexpected
    try:
        return datetime(
            int(year), month_number, int(day), int(hour), int(minute), int(second),
            tzinfo=_zone(sign, tz_hours, tz_minutes),
        )  # fmt: skip
    except ValueError:
        raise _Unexpected from None


@functools.lru_cache(maxsize=1024)
def _flags(raw: bytes) -> tuple[str, ...]:
    """A FLAGS list's flags, one tuple for each spelling (most messages share a few)."""
    return tuple(f.decode("utf-8", "replace") for f in raw.split())


@functools.cache
def _zone(sign: bytes, hours: bytes, minutes: bytes) -> timezone:
    """One tzinfo per offset, shared by every date that has it (a mailbox of a million
    messages would otherwise hold a million of them)."""
    offset = timedelta(hours=int(hours), minutes=int(minutes))
    if not offset:
        return UTC
    return timezone(-offset if sign == b"-" else offset)


def listing_groups(
    counts: Sequence[int | None], chunk: int, most: int
) -> list[tuple[list[int], bool]]:
    """The folders of a listing (their message counts, None where unknown) in groups of
    consecutive indices, in order: (indices, True) for folders asked for together, at most
    `most` of them and `chunk` messages in all; ([i], False) for a folder listed alone (its
    count unknown, or above `chunk`: it is listed in ranges of about `chunk`)."""
    groups: list[tuple[list[int], bool]] = []
    together: list[int] = []
    messages = 0
    for index, count in enumerate(counts):
        if count is None or count > chunk:
            if together:
                groups.append((together, True))
                together, messages = [], 0
            groups.append(([index], False))
            continue
        if together and (len(together) >= most or messages + count > chunk):
            groups.append((together, True))
            together, messages = [], 0
        together.append(index)
        messages += count
    if together:
        groups.append((together, True))
    return groups


# Flags that describe the session or the server's housekeeping, not the message.
_DROPPED_FLAGS = {"\\recent", "\\deleted"}
# Sizes below this are held as one int object each, however many messages share them
# (most mail is small: a listing of a million 2-4 KB messages holds a few thousand).
SHARED_SIZES = 64 * 1024


class Shared:
    """Values many listed messages hold alike, each kept as one object (a listing may
    hold a million messages): their flag tuples, and their sizes below SHARED_SIZES."""

    __slots__ = ("flags", "sizes")

    def __init__(self) -> None:
        self.flags: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.sizes: dict[int, int] = {}


def message_ref(
    folder: str,
    uidvalidity: int,
    message: Listed,
    dates: tuple[datetime | None, datetime | None] | None,
    shared: Shared,
) -> MessageRef:
    """One listed message, kept small: a million of them are held at once.  The Date
    header and the newest Received date (`dates`) only where the INTERNALDATE is
    missing or absurd (nothing else reads them), the Message-ID only where an \\All
    view needs it, the UID as the int read, flag tuples and small sizes shared."""
    message_id = message_fields(message.fields)[0] if message.fields else None
    received, date_header = dates or (None, None)
    flags = shared.flags.get(message.flags)
    if flags is None:  # this spelling's first message: the flags kept, shared
        kept = tuple(f for f in message.flags if f.lower() not in _DROPPED_FLAGS)
        flags = shared.flags[message.flags] = shared.flags.setdefault(kept, kept)
    size = message.size
    if size < SHARED_SIZES:
        size = shared.sizes.setdefault(size, size)
    return MessageRef(
        folder=folder,
        uidvalidity=uidvalidity,
        uid=message.uid,
        size=size,
        internaldate=message.internaldate,
        date_header=date_header,
        flags=flags,
        message_id=message_id,
        received=received,
    )


def listing_ranges(exists: int, uidnext: int, chunk: int) -> list[tuple[int, int]]:
    """UID ranges (low, high) of a folder's listing, about `chunk` messages each if the
    UIDs below UIDNEXT are spread evenly; the last ends at "*" (high 0), so mail that came
    after SELECT is listed too.  Without UIDNEXT: the whole folder at once."""
    if uidnext <= 1 or exists <= chunk:
        return [(1, 0)]
    count = -(-exists // chunk)
    step = -(-(uidnext - 1) // count)
    ranges = [(low, low + step - 1) for low in range(1, uidnext - 1, step)]
    return [*ranges[:-1], (ranges[-1][0], 0)]


def relative_path(name: str, delimiter: str, root: str) -> tuple[str, ...] | None:
    """Path of `name` relative to `root` (None when outside it); the root folder
    itself stands for the Inbox of the migrated mailbox."""
    parts = tuple(name.split(delimiter)) if delimiter else (name,)
    if not root:
        return parts
    root_parts = tuple(p for p in (root.split(delimiter) if delimiter else (root,)) if p)
    if parts[: len(root_parts)] != root_parts:
        return None
    rest = parts[len(root_parts) :]
    return rest if rest else ("INBOX",)

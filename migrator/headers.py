"""Reading a few fields of a message's header block (pure: bytes in, values out).

Python's email parser stops at the first line that is neither a field nor a
continuation, and real mail has such lines (a broken client, a stray body line): every
field after it is lost, and with it the Date and Message-ID the copier orders and names
mail by.  This reader never stops early: a malformed line is skipped, and the fields
after it are read as usual.  It reads the header block only (up to the first empty line).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Iterable
from datetime import datetime

# RFC 5322 2.2: a field name is printable US-ASCII but the colon; obs-FWS may precede it.
_FIELD = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def read_fields(block: bytes, names: Iterable[str]) -> dict[str, list[str]]:
    """The values of the fields `names` (any case) in the header block `block`, in order
    of appearance, unfolded, keyed by the lower-cased name.  Lines that are neither a
    field nor a continuation are skipped; the empty line ends the block."""
    wanted = {name.lower() for name in names}
    found: dict[str, list[str]] = {}
    name: str | None = None
    value: list[bytes] = []

    def close() -> None:
        if name is not None:
            text = b"".join(value).decode("utf-8", "replace")
            found.setdefault(name, []).append(" ".join(text.split()))

    for line in block.splitlines():
        if not line.strip(b"\r"):
            break  # the empty line: the end of the header block
        if line[:1] in (b" ", b"\t"):
            if name is not None:
                value.append(b" " + line.strip())
            continue
        close()
        name = None
        match = _FIELD.match(line)
        if match is None:
            continue  # malformed: skip it, keep reading
        field = match.group(1).decode("ascii").lower()
        if field in wanted:
            name = field
            value = [line[match.end() :].strip()]
    close()
    return found


def first_message_id(value: str | None) -> str | None:
    """The first <...> of a Message-ID field, or the field as written without one."""
    if value is None:
        return None
    text = " ".join(value.split())
    start = text.find("<")
    end = text.find(">", start + 1)
    if start != -1 and end != -1:
        return text[start : end + 1]
    return text or None


def parse_date(text: str | None) -> datetime | None:
    """An RFC 5322 date-time with its zone; None for anything unreadable or zoneless."""
    if not text:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed


def received_date(value: str | None) -> datetime | None:
    """The date-time of a Received field: what follows its last ";" (RFC 5321 4.4)."""
    if not value or ";" not in value:
        return None
    return parse_date(value.rsplit(";", 1)[1].strip())


def message_fields(block: bytes) -> tuple[str | None, str | None, datetime | None]:
    """Message-ID, the Date field's text and the newest Received date of a header block
    (the topmost Received field is the newest: each hop adds its own on top)."""
    found = read_fields(block, ("message-id", "date", "received"))
    return (
        first_message_id(first(found, "message-id")),
        first(found, "date"),
        received_date(first(found, "received")),
    )


def first(found: dict[str, list[str]], name: str) -> str | None:
    """The first value of field `name` in what read_fields found, if any."""
    values = found.get(name)
    return values[0] if values else None

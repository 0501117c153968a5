"""UID sets as servers write them (pure): RFC 4315 APPENDUID answers and RFC 7162 VANISHED
answers in, UIDs out."""

from __future__ import annotations

import re

_APPENDUID = re.compile(rb"\[APPENDUID ([0-9]+) ([0-9:,]+)\]", re.IGNORECASE)
_VANISHED = re.compile(rb"^(?:\(EARLIER\) )?([0-9:,*]+)$", re.IGNORECASE)


def uid_set(text: bytes, *, limit: int) -> list[int]:
    """The UIDs of a sequence set ("3:5,9"), each at most `limit` (so "1:*", or a range
    a server wrote past the last UID, stays small); ValueError where it is not one."""
    uids: list[int] = []
    for part in text.split(b","):
        low_text, _, high_text = part.partition(b":")
        low = limit if low_text == b"*" else int(low_text)
        high = low if not high_text else (limit if high_text == b"*" else int(high_text))
        low, high = min(low, high), max(low, high)
        uids.extend(range(low, min(high, limit) + 1))
    return uids


def append_uids(answer: bytes, count: int) -> tuple[int, list[int]] | None:
    """RFC 4315: the UIDVALIDITY and the UIDs, in order, of the `count` messages one APPEND
    stored, from its tagged OK ("[APPENDUID 38505 3955:3957] ..."); None where the answer
    does not say, or names another number of messages."""
    found = _APPENDUID.search(answer)
    if found is None:
        return None
    try:
        uids = uid_set(found.group(2), limit=2**32 - 1)
    except ValueError:
        return None
    if len(uids) != count:
        return None
    return int(found.group(1)), uids


def vanished_uids(answers: list[bytes], *, below: int) -> frozenset[int]:
    """The UIDs below `below` that RFC 7162 VANISHED answers ("(EARLIER) 3:5,9") name."""
    gone: set[int] = set()
    for answer in answers:
        found = _VANISHED.match(answer.strip())
        if found is None or below <= 1:
            continue
        gone.update(uid_set(found.group(1), limit=below - 1))
    return frozenset(gone)


def uid_sets(uids: list[int], *, most: int) -> list[bytes]:
    """`uids` written as sequence sets ("3:5,9"), runs of consecutive UIDs as ranges, each
    set at most `most` bytes long (a server limits its command lines: Dovecot to 64 KB),
    save a lone UID longer than that."""
    sets: list[bytes] = []
    parts: list[bytes] = []
    length = 0
    ordered = sorted(set(uids))
    at = 0
    while at < len(ordered):
        end = at
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        part = b"%d" % ordered[at] if end == at else b"%d:%d" % (ordered[at], ordered[end])
        if parts and length + 1 + len(part) > most:
            sets.append(b",".join(parts))
            parts, length = [], 0
        length += len(part) + (1 if parts else 0)
        parts.append(part)
        at = end + 1
    if parts:
        sets.append(b",".join(parts))
    return sets

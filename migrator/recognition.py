"""How a message already at the target is recognised, and which copy is whose (pure).

After a crash, a lost checkpoint store or a new batch over the same mailbox, the copier
must tell which source messages already sit in a target folder.  It never trusts the
source's size claim (Exchange's IMAP gives estimates, POP3 counts a final CRLF it adds)
nor any parser's reading of a header (Python's stops at the first malformed line).  It
compares bytes, in two steps:

1. The *content key*: a digest of the header block, everything before the first empty
   line (CRLF or LF), with line ends normalised to LF and trailing ones dropped.  Both
   sides compute it with `content_key` over the bytes themselves: the source over what
   it would send (after address rewriting), the target over what it stores.  A resend,
   a list copy or a second delivery differs in its Received/Date lines, so two messages
   rarely share a key.
2. Where two candidates share a key on either side (two source messages, or two copies
   at the target), the *digest* of the whole message decides, read for just those.

Copies are then matched one to one, first on (digest or key, system flags, date), then
on (digest or key, date), then on the digest or key alone, checkpointed messages before
the others at each step: two identical messages with other flags or dates each find
their own copy, and one copy never stands for two messages.
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from migrator.plan import MessageRef

# An empty line: the end of the header block (RFC 5322 2.1), as CRLF or LF.
_EMPTY_LINE = re.compile(rb"\n\r?\n")
# Flags every target keeps (keywords depend on the target folder's PERMANENTFLAGS).
SYSTEM_FLAGS = frozenset({"\\seen", "\\answered", "\\flagged", "\\draft"})
_DIGEST_CHARS = 32  # 128 bits of SHA-256, as hex


def header_end(data: bytes) -> int | None:
    """Offset of the first empty line in `data` (where the body separator starts), or
    None when `data` holds none."""
    if data.startswith((b"\n", b"\r\n")):
        return 0
    found = _EMPTY_LINE.search(data)
    return found.start() + 1 if found else None


def content_key(data: bytes, *, complete: bool) -> str | None:
    """The content key of the message `data` starts.  `complete`: `data` is the whole
    message (a message without an empty line is all header).  None when `data` is only a
    start and holds no empty line: the caller reads the whole message then."""
    end = header_end(data)
    if end is None:
        if not complete:
            return None
        end = len(data)
    return _digest(data[:end])


def message_digest(message: bytes) -> str:
    """The digest of a whole message, line ends normalised (a server may store LF and
    serve CRLF, and POP3 ends every message with a CRLF of its own)."""
    return _digest(message)


def _digest(data: bytes) -> str:
    normalised = data.replace(b"\r\n", b"\n").rstrip(b"\n")
    return hashlib.sha256(normalised).hexdigest()[:_DIGEST_CHARS]


def system_flags(flags: Iterable[str]) -> frozenset[str]:
    return frozenset(f.lower() for f in flags) & SYSTEM_FLAGS


def epoch_seconds(when: datetime | None) -> int | None:
    return int(when.timestamp()) if when is not None else None


@dataclass(frozen=True)
class TargetCopy:
    """One message in a target folder, as the index reads it."""

    id: str  # the target's own id in the folder (an IMAP UID, an Exchange ItemId)
    key: str | None  # content key; None: unknown (an item another tool made)
    flags: frozenset[str] = frozenset()  # system flags, lower-cased
    date: int | None = None  # INTERNALDATE / delivery time, epoch seconds
    digest: str | None = None  # the whole message's, where the target keeps it (EWS)


@dataclass(frozen=True)
class Candidate:
    """One source message bound for the folder, with what its copy would look like."""

    ref: MessageRef
    key: str | None  # content key of what would be sent; None: unreadable, never matches
    checkpointed: bool
    flags: frozenset[str] = frozenset()
    date: int | None = None

    @property
    def ident(self) -> tuple[str, int, str]:
        return (self.ref.folder, self.ref.uidvalidity, self.ref.uid)


def needs_digests(
    candidates: Sequence[Candidate], copies: Sequence[TargetCopy]
) -> tuple[list[Candidate], list[TargetCopy]]:
    """The candidates and copies whose whole-message digest must decide: those in a key
    shared by two candidates or two copies, where a copy exists and some candidate is
    not checkpointed (a group of checkpointed messages only decides nothing)."""
    groups = _groups(candidates, copies)
    wanted_candidates: list[Candidate] = []
    wanted_copies: list[TargetCopy] = []
    for members, present in groups.values():
        if not present or all(c.checkpointed for c in members):
            continue
        if len(members) > 1 or len(present) > 1:
            wanted_candidates.extend(members)
            wanted_copies.extend(t for t in present if t.digest is None)
    return wanted_candidates, wanted_copies


def match(
    candidates: Sequence[Candidate],
    copies: Sequence[TargetCopy],
    source_digests: dict[tuple[str, int, str], str] | None = None,
    target_digests: dict[str, str] | None = None,
) -> dict[tuple[str, int, str], TargetCopy]:
    """Which copy each candidate is, one to one; candidates without a copy are absent.

    `candidates` come in the order that breaks ties (newest first); checkpointed ones
    take their copy before the others at each step.  Within a key shared by two
    candidates or two copies, the digests (from `needs_digests`) decide, and a side
    without one matches nothing there."""
    source_digests = source_digests or {}
    target_digests = target_digests or {}
    found: dict[tuple[str, int, str], TargetCopy] = {}
    for members, present in _groups(candidates, copies).values():
        if not present:
            continue
        ambiguous = len(members) > 1 or len(present) > 1

        def identity_of_candidate(c: Candidate, ambiguous: bool = ambiguous) -> str | None:
            return source_digests.get(c.ident) if ambiguous else c.key

        def identity_of_copy(t: TargetCopy, ambiguous: bool = ambiguous) -> str | None:
            return (t.digest or target_digests.get(t.id)) if ambiguous else t.key

        ordered = [c for c in members if c.checkpointed] + [
            c for c in members if not c.checkpointed
        ]
        taken: set[int] = set()  # indexes into `present`
        for level in range(3):
            # Copies by what this level compares, in index order: one lookup per candidate.
            free: dict[tuple[object, ...], deque[int]] = {}
            for index, copy in enumerate(present):
                if index not in taken and (mine := identity_of_copy(copy)) is not None:
                    free.setdefault(_signature(level, mine, copy.flags, copy.date), deque()).append(
                        index
                    )
            for candidate in ordered:
                mine = identity_of_candidate(candidate)
                if candidate.ident in found or mine is None:
                    continue
                waiting = free.get(_signature(level, mine, candidate.flags, candidate.date))
                if waiting:
                    index = waiting.popleft()
                    taken.add(index)
                    found[candidate.ident] = present[index]
    return found


def _signature(
    level: int, identity: str, flags: frozenset[str], date: int | None
) -> tuple[object, ...]:
    """What match() compares at `level`: 0 all of it, 1 without the flags, 2 the bytes."""
    if level == 0:
        return (identity, flags, date)
    if level == 1:
        return (identity, date)
    return (identity,)


def _groups(
    candidates: Sequence[Candidate], copies: Sequence[TargetCopy]
) -> dict[str, tuple[list[Candidate], list[TargetCopy]]]:
    groups: dict[str, tuple[list[Candidate], list[TargetCopy]]] = {}
    for candidate in candidates:
        if candidate.key is not None:
            groups.setdefault(candidate.key, ([], []))[0].append(candidate)
    for copy in copies:
        if copy.key is not None and copy.key in groups:
            groups[copy.key][1].append(copy)
    return groups


def only_in_all_mail(
    view: Sequence[MessageRef],
    others: Sequence[MessageRef],
    keys: dict[tuple[str, int, str], str | None],
) -> list[MessageRef]:
    """The messages of an RFC 6154 \\All view (Gmail's All Mail) that no other folder of
    the same mailbox holds (Gmail's archived mail), counted one for one.

    One server lists one message alike in every folder it shows it in: same Message-ID,
    size and INTERNALDATE.  Messages without a Message-ID are told apart by their content
    key, from `keys` (by ident); one whose key could not be read is kept, since copying
    it once too often is better than losing it."""

    def mark(ref: MessageRef) -> tuple[object, ...]:
        date = epoch_seconds(ref.internaldate)
        if ref.message_id:
            return ("id", ref.message_id, ref.size, date)
        key = keys.get(ref.ident)
        return ("key", key, date) if key is not None else ("unread", ref.ident)

    held: dict[tuple[object, ...], int] = {}
    for ref in others:
        held[mark(ref)] = held.get(mark(ref), 0) + 1
    left = []
    for ref in view:
        wanted = mark(ref)
        if held.get(wanted, 0) > 0:
            held[wanted] -= 1
        else:
            left.append(ref)
    return left

"""What the IMAP target writes in an APPEND (pure but for the write itself): the flags a
folder keeps, INTERNALDATE as text, a batch cut into runs of one folder, and a batch
written together (ImapTarget.send_together) until its answers are read."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from imapclient import IMAPClient
from imapclient.datetime_util import datetime_to_INTERNALDATE

from migrator.connectors.imap import wire as imapwire
from migrator.syncstate import Placement
from migrator.targets.base import AppendItem, Outcome

_SYSTEM_FLAGS = {"\\seen", "\\answered", "\\flagged", "\\draft"}


@dataclass(frozen=True)
class Together:
    """A batch send_together wrote: its runs of one folder with their APPENDs' tags, or,
    where it could not be sent that way, its outcomes and placements already."""

    items: Sequence[AppendItem]
    runs: list[tuple[Sequence[AppendItem], bytes]]
    outcomes: list[Outcome] | None = None
    placed: list[Placement | None] = field(default_factory=list)


def multiappend_uncopied(
    client: IMAPClient, folder: str, run: Sequence[AppendItem], keep_keywords: bool
) -> tuple[str, bytes]:
    """RFC 3502 MULTIAPPEND of `run`, each message written to the socket as it is (no
    copy on the way: imapwire.multiappend); the tagged response's type ("OK" or "NO")
    and text."""
    return imapwire.multiappend_answer(client, folder, wire_items(run, keep_keywords))


def wire_items(
    run: Sequence[AppendItem], keep_keywords: bool
) -> Iterator[tuple[tuple[str, ...], str | None, bytes]]:
    """Each item of `run` as imapwire writes it: kept flags, INTERNALDATE text, bytes."""
    for item in run:
        date = None if item.internaldate is None else internaldate_text(item.internaldate)
        yield kept_flags(item.flags, keep_keywords), date, item.message


def runs_of(items: Sequence[AppendItem]) -> list[Sequence[AppendItem]]:
    """`items` cut into runs of one folder (MULTIAPPEND takes one mailbox), in order."""
    runs: list[Sequence[AppendItem]] = []
    start = 0
    while start < len(items):
        end = start + 1
        while end < len(items) and items[end].folder == items[start].folder:
            end += 1
        runs.append(items[start:end])
        start = end
    return runs


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def internaldate_text(when: datetime) -> str:
    """RFC 3501 date-time ("17-Jul-1996 02:44:25 -0700") in `when`'s own offset, as
    imapclient's datetime_to_INTERNALDATE writes it (but always with four year digits),
    without strftime's cost on every message; a naive `when` goes to imapclient, which
    gives it the system's zone."""
    offset = when.utcoffset()
    if offset is None or offset.seconds % 60 or offset.microseconds:
        return str(datetime_to_INTERNALDATE(when))
    minutes = offset.days * 1440 + offset.seconds // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return (
        f"{when.day:02d}-{_MONTHS[when.month - 1]}-{when.year:04d} "
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} {sign}{hours:02d}{minutes:02d}"
    )


def has_keywords(items: Sequence[AppendItem]) -> bool:
    """Whether any of `items` has a keyword (a flag without a backslash), which only a
    folder with \\* in its PERMANENTFLAGS keeps: _kept drops none of the others by it."""
    return any(not f.startswith("\\") for item in items for f in item.flags)


def kept_flags(flags: tuple[str, ...], keywords: bool) -> tuple[str, ...]:
    """System flags always; keywords where the folder's PERMANENTFLAGS has \\*."""
    return tuple(
        f for f in flags if f.lower() in _SYSTEM_FLAGS or (keywords and not f.startswith("\\"))
    )

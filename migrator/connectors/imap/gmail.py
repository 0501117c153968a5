"""Gmail's IMAP as a source: each message once, by its X-GM-MSGID, in the folder
migrator.gmail's rule picks from its X-GM-LABELS (or once per label), the daily download
cap kept, and a cut-off counted as the cap reached.

The label folders are listed first (each message's id, labels, size, dates, flags), then
`[Gmail]/All Mail` last, for the messages no label folder held (archived mail, and mail
whose labels are hidden from IMAP).  The copier sees one folder per place a message goes
(`list_folders`), and refs whose uid is the Gmail message id under a fixed UIDVALIDITY:
checkpoints key on the message, not on where Gmail shows it today, and a rerun recognises
each copy in the folder the rule picks again.  Each message is read from All Mail where it
is there (one folder for the whole mailbox), else from a label folder.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imapclient import imap_utf7
from imapclient.response_parser import parse_fetch_response

from migrator import gmail
from migrator.connectors.imap import wire
from migrator.connectors.imap.connection import as_text, imap_errors
from migrator.connectors.imap.source import FETCH_BATCH_BYTES, ImapSource
from migrator.errors import CapReached, ErrorCode, PermanentError, TransientError
from migrator.gmail import ByteMeter, Folders, GmailSettings, LabelMode
from migrator.headers import message_fields, parse_date
from migrator.plan import MessageRef, fetch_windows
from migrator.sources.base import SourceFolder

log = logging.getLogger(__name__)

# Gmail message ids never change and never come back: the refs' UIDVALIDITY.
MSGID_VALIDITY = 1
_ITEMS = (
    "(UID X-GM-MSGID X-GM-LABELS INTERNALDATE RFC822.SIZE FLAGS "
    "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)])"
)
_FIELDS = b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"
_DROPPED_FLAGS = {"\\recent", "\\deleted"}
# Messages read in one go (the copier's fetch windows are smaller): bodies wait here only
# until the chunk is read, so that one message wanted by two refs is read once.
_READ_CHUNK = 500


@dataclass
class _Account:
    """What listing learnt, shared by every session of one pass."""

    folders: list[SourceFolder] = field(default_factory=list)
    placed: dict[str, list[MessageRef]] = field(default_factory=dict)  # place -> refs
    where: dict[tuple[str, int, str], MessageRef] = field(default_factory=dict)  # -> real


@dataclass
class _Seen:
    """One Gmail message as listed: where it shows, and what it is."""

    msgid: str  # X-GM-MSGID, in decimal
    ref: MessageRef  # as listed in the first folder that showed it
    labels: frozenset[str]
    located: MessageRef  # where to read it: All Mail when it is there


class GmailSource:
    """A Gmail mailbox over IMAP (MailboxSource): `imap` is the session it reads through."""

    def __init__(
        self,
        imap: ImapSource,
        settings: GmailSettings,
        meter: ByteMeter | None = None,
        account: _Account | None = None,
    ) -> None:
        self._imap = imap
        self._settings = settings
        self._meter = meter
        self._account = account or _Account()

    # -- listing -----------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        listed = self._imap.listed_folders()
        all_mail = [(f, flags) for f, flags in listed if "\\all" in flags]
        if not all_mail:
            raise PermanentError(
                f"{self._imap.what}: Gmail, but no folder is flagged \\All (All Mail): "
                "check that All Mail is shown in IMAP (Gmail settings, Labels)",
                code=ErrorCode.NONEXISTENT,
            )
        spam_trash = self._settings.include_spam_trash
        sources = [
            (folder, flags)
            for folder, flags in listed
            if "\\all" not in flags
            and not flags & {"\\flagged", "\\important"}
            and (spam_trash or not flags & {"\\junk", "\\trash"})
        ]
        seen: dict[str, _Seen] = {}
        held: dict[str, int] = {}  # folder -> messages, to tell two \Sent folders apart
        for folder, flags in sources:
            held[folder.name] = self._note(folder, flags, seen)
        archive, archive_flags = all_mail[0]
        archived = self._note(archive, archive_flags, seen, only_new=True)
        folders = _folders(sources, held, archive.name)
        account = _Account()
        for message in seen.values():
            for place in gmail.places(
                message.labels, folders, self._settings.labels, spam_trash=spam_trash
            ):
                ref = self._placed(message, place, folders)
                account.placed.setdefault(place, []).append(ref)
                account.where[ref.ident] = message.located
        # The user's labels even when empty; a system folder where a message goes.
        account.folders = [
            folder
            for folder, _ in sources
            if folder.name in account.placed or not folder.special_use
        ]
        if archive.name in account.placed:
            log.info("%d messages only All Mail holds: copied to Archive", archived)
            account.folders.append(
                SourceFolder(name=archive.name, path=gmail.ARCHIVE_PATH, special_use=frozenset())
            )
        self._account = account
        return list(account.folders)

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        return list(self._account.placed.get(folder.name, []))

    def _note(
        self,
        folder: SourceFolder,
        flags: set[str],
        seen: dict[str, _Seen],
        *,
        only_new: bool = False,
    ) -> int:
        """List `folder` into `seen` by message id; how many messages it held (with
        `only_new`: how many no folder listed before held).  The folder's own label is
        added to what X-GM-LABELS says: a label whose folder shows the message holds."""
        shown = _label_of(folder, flags)
        count = 0
        for ref, msgid, labels in self._listing(folder):
            labels = labels | shown
            known = seen.get(msgid)
            if known is None:
                seen[msgid] = _Seen(msgid, ref, labels, ref)
                count += 1
                continue
            known.labels |= labels
            if folder.is_all_mail:
                known.located = ref
            count += 0 if only_new else 1
        return count

    def _listing(self, folder: SourceFolder) -> Iterator[tuple[MessageRef, str, frozenset[str]]]:
        with self._cut_off():
            info = self._imap.select(folder.name)
        if int(info.get(b"EXISTS", 0)) == 0:
            return
        what = f"{self._imap.what}, folder {folder.name!r}"
        with self._cut_off(), imap_errors(what):
            typ, data = wire.uid_fetch(self._imap.client, "1:*", _ITEMS)
            if typ != "OK":
                raise PermanentError(f"{what}: FETCH refused: {as_text(data[0] if data else '')}")
            parsed = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        for uid, item in parsed.items():
            msgid = item.get(b"X-GM-MSGID")
            if msgid is None:
                raise PermanentError(
                    f"{what}: the server announces X-GM-EXT-1 but gives no X-GM-MSGID",
                    code=ErrorCode.PROTOCOL,
                )
            yield _ref(folder.name, uidvalidity, int(uid), item), str(msgid), _labels(item)

    def _placed(self, message: _Seen, place: str, folders: Folders) -> MessageRef:
        """The ref the copier sees: in `place`, keyed by the Gmail message id, starred as
        \\Flagged, its other labels as keywords (RULE)."""
        flags = [f for f in message.ref.flags if f.lower() != "\\flagged"]
        if gmail.STARRED in message.labels or "\\flagged" in {f.lower() for f in message.ref.flags}:
            flags.append("\\Flagged")
        if self._settings.labels is LabelMode.COPIES:
            # One copy per label: each its own checkpoint, under its label's folder.
            return message.ref.replace(
                folder=place, uidvalidity=MSGID_VALIDITY, uid=message.msgid, flags=tuple(flags)
            )
        # One copy: its checkpoint under All Mail whatever folder the rule picks now, so a
        # label changed between two runs does not send it again.
        return message.ref.replace(
            folder=folders.archive,
            place=None if place == folders.archive else place,
            uidvalidity=MSGID_VALIDITY,
            uid=message.msgid,
            flags=tuple(flags) + gmail.keywords(message.labels, place, folders),
        )

    # -- fetching ----------------------------------------------------------------------

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for window in fetch_windows(refs, self._imap.fetch_count, FETCH_BATCH_BYTES):
            allowed, resume_at = self._reserve(window)
            yield from self._read(window[:allowed], self._imap.fetch)
            if resume_at is not None:
                raise CapReached(
                    f"{self._imap.what}: Gmail's daily download cap "
                    f"({self._settings.download_cap // gmail.MB} MB) reached",
                    resume_at,
                )

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        yield from self._read(refs, self._imap.heads)

    def _read(self, refs: Sequence[MessageRef], how: Any) -> Iterator[tuple[MessageRef, bytes]]:
        """Each ref read where it is found (once, however many labels' copies want it:
        `copies`), handed back as the ref the copier knows, in the order given."""
        where = self._account.where
        with self._cut_off():
            for start in range(0, len(refs), _READ_CHUNK):
                chunk = refs[start : start + _READ_CHUNK]
                unique = {where[ref.ident].ident: where[ref.ident] for ref in chunk}
                got = {real.ident: body for real, body in how(list(unique.values()))}
                for ref in chunk:
                    body = got.get(where[ref.ident].ident)
                    if body is not None:  # else expunged since listing: the copier names it
                        yield ref, body
                del got

    @contextlib.contextmanager
    def _cut_off(self) -> Iterator[None]:
        """Gmail ends a session past its limits (BYE) or lets it starve (a stall): a
        connection lost here for the second time in a row (gmail.CUTOFF_STRIKES_WITHIN)
        counts as the cap reached, not as a failure; the first is retried as any other
        lost connection (a network reset looks the same)."""
        try:
            yield
        except TransientError as exc:
            if exc.code is not ErrorCode.CONNECTION:
                raise
            if self._meter is not None and not self._meter.lost(gmail.CUTOFF_STRIKES_WITHIN):
                log.warning("%s: connection lost; retried (a second loss soon counts as "
                            "Gmail cutting the session off)", self._imap.what)  # fmt: skip
                raise
            until = time.time() + self._settings.cutoff_pause
            if self._meter is not None:
                self._meter.reached(until)
            message = f"{self._imap.what}: Gmail cut the session off ({exc})"
            raise CapReached(message, until) from exc

    def _reserve(self, window: Sequence[MessageRef]) -> tuple[int, float | None]:
        if self._meter is None:
            return len(window), None
        return self._meter.reserve([ref.size for ref in window])

    def session(self) -> GmailSource:
        return GmailSource(self._imap.session(), self._settings, self._meter, self._account)

    def close(self) -> None:
        self._imap.close()


def _folders(
    sources: list[tuple[SourceFolder, set[str]]], held: dict[str, int], archive: str
) -> Folders:
    """Which folder each label puts a message in: INBOX, the folder flagged for each
    system label (the fullest where two are, as on a server beside Gmail's own), and the
    user labels' own."""
    system: dict[str, str] = {}
    user: dict[str, str] = {}
    best: dict[str, int] = {}
    for folder, flags in sources:
        if folder.name.upper() == "INBOX":
            system[gmail.INBOX] = folder.name
            continue
        labels = [gmail.SPECIAL_USE_LABEL[f] for f in flags if f in gmail.SPECIAL_USE_LABEL]
        for label in labels:
            if held.get(folder.name, 0) > best.get(label, -1):
                system[label], best[label] = folder.name, held.get(folder.name, 0)
        if not labels:
            user[folder.name] = folder.name
    return Folders(system=system, user=user, archive=archive)


def _label_of(folder: SourceFolder, flags: set[str]) -> frozenset[str]:
    """The label a folder shows its messages under (none for All Mail)."""
    if folder.name.upper() == "INBOX":
        return frozenset({gmail.INBOX})
    if "\\all" in flags:
        return frozenset()
    system = {gmail.SPECIAL_USE_LABEL[f] for f in flags if f in gmail.SPECIAL_USE_LABEL}
    return frozenset(system or {folder.name})


def _labels(item: dict[bytes, Any]) -> frozenset[str]:
    return frozenset(
        imap_utf7.decode(label) if isinstance(label, bytes) else str(label)
        for label in item.get(b"X-GM-LABELS", ())
    )


def _ref(folder: str, uidvalidity: int, uid: int, item: dict[bytes, Any]) -> MessageRef:
    message_id, date_text, _ = message_fields(item.get(_FIELDS) or b"")
    internaldate = item.get(b"INTERNALDATE")
    return MessageRef(
        folder=folder,
        uidvalidity=uidvalidity,
        uid=str(uid),
        size=int(item[b"RFC822.SIZE"]),
        internaldate=internaldate if isinstance(internaldate, datetime) else None,
        date_header=parse_date(date_text),
        flags=tuple(
            f
            for f in (as_text(flag) for flag in item.get(b"FLAGS", ()))
            if f.lower() not in _DROPPED_FLAGS
        ),
        message_id=message_id,
    )

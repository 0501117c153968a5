"""The IMAP target's hooks for incremental passes (targets.base.SyncTarget): flags given
anew by UID STORE on the UID the ledger recorded, copies removed by UID EXPUNGE (RFC 4315
UIDPLUS: only those UIDs, never another client's deleted mail), a folder renamed, and a
mark (UIDVALIDITY and UIDNEXT) so the next pass indexes only what came after it."""

from __future__ import annotations

import imaplib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.changes import listed_statuses
from migrator.connectors.imap.connection import (
    fetch_all,
    imap_error,
    imap_errors,
    read_listing,
)
from migrator.connectors.imap.listing import HEADER_ITEM, INDEX_ITEMS, Listed
from migrator.connectors.imap.uidsets import append_uids, uid_sets
from migrator.errors import ErrorCode, PermanentError
from migrator.foldermap import TargetFolder
from migrator.recognition import TargetCopy
from migrator.syncstate import Placement

log = logging.getLogger(__name__)

# The longest UID set one UID STORE names (Dovecot takes command lines of 64 KB).
STORE_SET_BYTES = 8192
MAX_UID = 4294967295  # RFC 3501's nz-number: a UID is at most this
_SYSTEM_FLAGS = {"\\seen", "\\answered", "\\flagged", "\\draft"}
# RFC 6154 SPECIAL-USE attributes (lower-cased, as ImapTarget keeps them).
_SPECIAL_USE = {"\\sent", "\\trash", "\\junk", "\\drafts", "\\archive", "\\all", "\\flagged"}


class ImapSyncHooks:
    """Mixed into ImapTarget, whose connection and folder knowledge these use."""

    _client: IMAPClient
    _what: str
    _existing: set[str]
    _special: dict[str, str]  # RFC 6154 attribute -> the target's folder with it
    _marks: dict[str, str]  # folder -> its mark as its last SELECT gave it
    _listed_marks: dict[str, str] | None  # every folder's, by LIST-STATUS (None: not read)

    if TYPE_CHECKING:  # ImapTarget's own

        def _select(self, name: str, what: str) -> dict[bytes, Any]: ...
        def _selected_now(self, name: str, info: dict[bytes, Any]) -> None: ...
        def _keywords(self, name: str) -> bool: ...
        def _name_of(self, folder: TargetFolder) -> str: ...
        def _copies(
            self, listed: dict[int, Listed], what: str, *, folder: str | None = None
        ) -> list[TargetCopy]: ...

    def set_flags(self, changes: Sequence[tuple[Placement, tuple[str, ...]]]) -> int:
        """UID STORE FLAGS of each change, a round trip per folder rather than one per
        command: each folder's SELECT goes with the STOREs of the folder before it, and a
        folder's STOREs are written only once its SELECT has answered with the UIDVALIDITY
        its placements were recorded under (never into a folder rebuilt since)."""
        folders = [(f, m) for f, m in _by_folder(changes).items() if f in self._existing]
        changed = 0
        stores: list[tuple[str, bytes]] = []  # the STOREs of the folder selected last
        storing, count = self._what, 0  # that folder's `what`, the messages they change
        for at in range(len(folders) + 1):
            commands = list(stores)
            if at < len(folders):
                name = imapwire.folder_arg(self._client, folders[at][0])
                commands.append(("SELECT", b"SELECT " + name))
            if not commands:
                break
            with imap_errors(storing):
                answers = imapwire.pipelined(self._client, commands)
                for answer in answers[: len(stores)]:
                    if answer.typ != "OK":
                        raise imaplib.IMAP4.error(f"store failed: {answer.text}")
            changed += count
            if at == len(folders):
                break
            folder, members = folders[at]
            storing = f"{self._what}, folder {folder!r}"
            with imap_errors(storing):
                if answers[-1].typ != "OK":
                    raise imaplib.IMAP4.error(f"select failed: {answers[-1].text}")
                info = imapwire.select_info(self._client, answers[-1])
            self._selected_now(folder, info)
            valid = self._valid_under(info, storing, [p for p, _ in members])
            stores = self._stores(folder, members, valid)
            count = sum(1 for p, _ in members if p in valid)
        return changed

    def _stores(
        self,
        folder: str,
        members: list[tuple[Placement, tuple[str, ...]]],
        valid: set[Placement],
    ) -> list[tuple[str, bytes]]:
        """The UID STOREs giving the valid members of `folder` (selected) their flags:
        one per set of flags, the flags this folder can keep."""
        keywords = self._keywords(folder)
        by_flags: dict[tuple[str, ...], list[int]] = {}
        for placement, flags in members:
            if placement in valid:
                kept = tuple(
                    sorted(
                        f
                        for f in flags
                        if f.lower() in _SYSTEM_FLAGS or (keywords and not f.startswith("\\"))
                    )
                )
                by_flags.setdefault(kept, []).append(int(placement.id))
        return [
            ("STORE", b"UID STORE %s FLAGS.SILENT (%s)" % (uids, " ".join(flags).encode()))
            for flags, chosen in by_flags.items()
            for uids in uid_sets(chosen, most=STORE_SET_BYTES)
        ]

    def remove(self, placements: Sequence[Placement]) -> int:
        if not self._client.has_capability("UIDPLUS"):
            # Without UID EXPUNGE, EXPUNGE would also remove mail another client marked.
            log.warning("%s: no UIDPLUS, so no copy is removed", self._what)
            return 0
        removed = 0
        for folder, members in _by_folder([(p, ()) for p in placements]).items():
            what = f"{self._what}, folder {folder!r}"
            valid = self._valid(folder, what, [p for p, _ in members])
            uids = sorted(int(p.id) for p in valid)
            if not uids:
                continue
            with imap_errors(what):
                present = self._client.search(["UID", ",".join(map(str, uids))])
                if present:
                    self._client.add_flags(present, ["\\Deleted"], silent=True)
                    self._client.uid_expunge(present)
            removed += len(present)
        return removed

    def rename_folder(self, old: str, new: TargetFolder) -> str | None:
        name = self._name_of(new)
        if name == old:
            return name
        if name in self._existing or old not in self._existing or old.upper() == "INBOX":
            return None
        if old in {name for flag, name in self._special.items() if flag in _SPECIAL_USE}:
            return None  # the target's own Sent, Trash...: never renamed away
        what = f"{self._what}, folder {old!r}"
        try:
            with imap_errors(what):
                self._client.rename_folder(old, name)
                self._client.subscribe_folder(name)
        except PermanentError as exc:
            if exc.code is ErrorCode.ALREADYEXISTS:
                return None
            raise
        self._existing.discard(old)
        self._existing.add(name)
        return name

    def mark(self, name: str) -> str | None:
        if name in self._marks:  # selected since this connection last appended to it
            return self._marks[name]
        if self._listed_marks is None:
            # Every folder's in one round trip (RFC 5819), not a STATUS each: a mark read
            # before other connections appended is lower than the truth, never higher,
            # and a lower one only makes the next pass read more of the folder.
            self._listed_marks = {
                folder: _mark(values[b"UIDVALIDITY"], values[b"UIDNEXT"])
                for folder, values in listed_statuses(
                    self._client, self._what, (b"UIDVALIDITY", b"UIDNEXT")
                ).items()
            }
        if name in self._listed_marks:
            return self._listed_marks[name]
        with imap_errors(f"{self._what}, folder {name!r}"):
            status = self._client.folder_status(name, ["UIDVALIDITY", "UIDNEXT"])
        return _mark(int(status[b"UIDVALIDITY"]), int(status[b"UIDNEXT"]))

    def index_since(self, name: str, mark: str) -> list[TargetCopy] | None:
        what = f"{self._what}, folder {name!r}"
        uidvalidity, uidnext = _read_mark(mark)
        info = self._select(name, what)
        if str(info.get(b"UIDVALIDITY", "")) != uidvalidity or uidnext is None:
            return None
        if int(info.get(b"UIDNEXT", 0)) <= uidnext:
            return []
        with imap_errors(what):
            listed = fetch_all(self._client, INDEX_ITEMS, HEADER_ITEM, uids=f"{uidnext}:*")
        return self._copies({u: m for u, m in listed.items() if u >= uidnext}, what)

    def indexes_since(self, marks: Mapping[str, str]) -> dict[str, list[TargetCopy] | None]:
        """index_since of each folder, every folder's SELECT and UID FETCH of what came
        after its mark written before any answer is read: one round trip for them all."""
        found: dict[str, list[TargetCopy] | None] = {}
        after: dict[str, tuple[str, int]] = {}
        for name, mark in marks.items():
            uidvalidity, uidnext = _read_mark(mark)
            if uidnext is not None:
                after[name] = (uidvalidity, uidnext)
            else:
                found[name] = None
        # Up to the highest UID there can be, not "*": n:* names the folder's last message
        # where none is at n or above (RFC 3501 section 9), which would be read for nothing.
        steps = [imapwire.Step(n, True, f"{first}:{MAX_UID}") for n, (_, first) in after.items()]
        if not steps:
            return found
        with imap_errors(self._what):
            answered = list(imapwire.examine_fetch(self._client, steps, INDEX_ITEMS, verb="SELECT"))
        for got in answered:
            what = f"{self._what}, folder {got.folder!r}"
            if got.refused is not None:  # as index_since's SELECT raises it
                raise imap_error(IMAPClientError(f"select failed: {got.refused}"), what)
            self._selected_now(got.folder, got.info)
            under, first = after[got.folder]
            if str(got.info.get(b"UIDVALIDITY", "")) != under:
                found[got.folder] = None
                continue
            with imap_errors(what):
                listed = read_listing(got.fetched, HEADER_ITEM)
            new = {u: m for u, m in listed.items() if u >= first}
            found[got.folder] = self._copies(new, what, folder=got.folder)
        return found

    def _valid(self, folder: str, what: str, placements: list[Placement]) -> set[Placement]:
        """The placements that still name a copy: the folder's UIDVALIDITY is the one
        they were recorded under (0: found there, taken as it is)."""
        if folder not in self._existing:
            return set()
        return self._valid_under(self._select(folder, what), what, placements)

    def _valid_under(
        self, info: dict[bytes, Any], what: str, placements: list[Placement]
    ) -> set[Placement]:
        """The placements that name a copy in the folder whose SELECT answered `info`."""
        current = int(info.get(b"UIDVALIDITY", 0))
        valid = {p for p in placements if p.uidvalidity in (0, current) and p.id.isdigit()}
        if len(valid) < len(placements):
            log.warning(
                "%s: %d copies recorded under another UIDVALIDITY, left alone",
                what,
                len(placements) - len(valid),
            )
        return valid


def _mark(uidvalidity: int, uidnext: int) -> str:
    """A target folder's mark: its UIDVALIDITY and UIDNEXT when taken, "validity:next"."""
    return f"{uidvalidity}:{uidnext}"


def _read_mark(mark: str) -> tuple[str, int | None]:
    """A mark's UIDVALIDITY (as text, compared with a SELECT's) and UIDNEXT (None: not
    a mark this reads)."""
    uidvalidity, _, uidnext = mark.partition(":")
    return uidvalidity, int(uidnext) if uidnext.isdigit() else None


def _by_folder(
    changes: Sequence[tuple[Placement, tuple[str, ...]]],
) -> dict[str, list[tuple[Placement, tuple[str, ...]]]]:
    grouped: dict[str, list[tuple[Placement, tuple[str, ...]]]] = {}
    for placement, flags in changes:
        grouped.setdefault(placement.folder, []).append((placement, flags))
    return grouped


def placements(folder: str, answer: bytes, count: int) -> list[Placement | None]:
    """Where RFC 4315 APPENDUID says the `count` messages of one APPEND went."""
    said = append_uids(answer, count)
    if said is None:
        return [None] * count
    uidvalidity, uids = said
    return [Placement(folder, uidvalidity, str(uid)) for uid in uids]

"""IMAP source adapter: lists a mailbox (or the part under a root folder) and
fetches message bytes, newest-first batches grouped by folder."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.response_parser import parse_fetch_response

from migrator.batch import MailboxJob
from migrator.errors import FolderRefused, PermanentError, TransientError
from migrator.imapconn import ConnectOptions, as_text, connect, imap_errors, logout, message_fields
from migrator.listing import FIELDS_ITEM, LISTING_ITEMS, Listed, RawFetch, parse_listing
from migrator.plan import MessageRef, fetch_windows, message_key
from migrator.sources.base import SourceFolder

# Flags that describe the session or the server's housekeeping, not the message.
_DROPPED_FLAGS = {"\\recent", "\\deleted"}

# A fetch round trip carries at most this many messages or bytes: big enough to
# hide latency, small enough that memory stays flat.
FETCH_BATCH_COUNT = 100
FETCH_BATCH_BYTES = 8 * 1024 * 1024


class ImapSource:
    def __init__(self, job: MailboxJob, options: ConnectOptions) -> None:
        self._job = job
        self._options = options
        self._what = f"source mailbox {job.source_identity}"
        self._client: IMAPClient = connect(
            job.source_server, job.source_credentials, options, what=self._what
        )
        self._selected: str | None = None
        self._delimiter = "/"

    # -- listing -----------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        root = (self._job.source_root_folder or "").strip()
        with imap_errors(self._what):
            listed = self._client.list_folders()
        folders: list[SourceFolder] = []
        for flags, delimiter, name in listed:
            flag_names = {as_text(f) for f in flags}
            lowered = {f.lower() for f in flag_names}
            if lowered & _NOT_COPIED:
                continue
            name = as_text(name)
            delim = as_text(delimiter) if delimiter else ""
            if delim:
                self._delimiter = delim
            path = _relative_path(name, delim, root)
            if path is None:
                continue
            special = frozenset(f for f in flag_names if f.lower() in _SPECIAL_USE)
            folders.append(SourceFolder(name=name, path=path, special_use=special))
        if root and not folders:
            raise FolderRefused(f"{self._what}: root folder {root!r} not found or empty of folders")
        return folders

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        what = f"{self._what}, folder {folder.name!r}"
        info = self._select(folder.name)
        uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        if int(info.get(b"EXISTS", 0)) == 0:
            return []
        with imap_errors(what):
            listed = _list(self._client)
            fields = {uid: message_fields(m.fields or b"") for uid, m in listed.items()}
            without_id = [uid for uid, (message_id, _) in fields.items() if message_id is None]
            blocks = self._client.fetch(without_id, ["BODY.PEEK[HEADER]"]) if without_id else {}
        refs = []
        for uid, message in listed.items():
            message_id, date_text = fields[uid]
            block = blocks.get(uid, {}).get(b"BODY[HEADER]") if message_id is None else None
            refs.append(
                MessageRef(
                    folder=folder.name,
                    uidvalidity=uidvalidity,
                    uid=uid,
                    size=message.size,
                    internaldate=message.internaldate,
                    date_header=parse_date(date_text),
                    flags=tuple(f for f in message.flags if f.lower() not in _DROPPED_FLAGS),
                    key=message_key(message_id, message.size, block),
                )
            )
        return refs

    # -- fetching ----------------------------------------------------------------------

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """Message bytes in the order given; one round trip per folder per window."""
        for window in fetch_windows(refs, FETCH_BATCH_COUNT, FETCH_BATCH_BYTES):
            by_folder: dict[str, list[MessageRef]] = {}
            for ref in window:
                by_folder.setdefault(ref.folder, []).append(ref)
            bodies: dict[tuple[str, int], bytes] = {}
            for folder, members in by_folder.items():
                info = self._select(folder)
                what = f"{self._what}, folder {folder!r}"
                if int(info.get(b"UIDVALIDITY", 0)) != members[0].uidvalidity:
                    # The folder was rebuilt since it was listed: its UIDs mean other
                    # messages now.  Re-plan rather than copy the wrong mail.
                    raise TransientError(f"{what}: UIDVALIDITY changed; re-planning")
                with imap_errors(what):
                    fetched = self._client.fetch([r.uid for r in members], ["BODY.PEEK[]"])
                for uid, data in fetched.items():
                    body = data.get(b"BODY[]")
                    if body is not None:
                        bodies[(folder, int(uid))] = body
                del fetched
            for ref in window:
                body = bodies.pop((ref.folder, ref.uid), None)
                if body is None:
                    # Expunged since listing: nothing to copy, and nothing lost.
                    continue
                yield ref, body

    def headers(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        by_folder: dict[str, list[MessageRef]] = {}
        for ref in refs:
            by_folder.setdefault(ref.folder, []).append(ref)
        for folder, members in by_folder.items():
            self._select(folder)
            for start in range(0, len(members), 500):
                chunk = members[start : start + 500]
                with imap_errors(f"{self._what}, folder {folder!r}"):
                    fetched = self._client.fetch([r.uid for r in chunk], ["BODY.PEEK[HEADER]"])
                for ref in chunk:
                    header = fetched.get(ref.uid, {}).get(b"BODY[HEADER]")
                    if header is not None:
                        yield ref, header

    def session(self) -> ImapSource:
        # UIDs and UIDVALIDITY are the folder's, not the connection's: a second
        # connection fetches what this one listed (and checks UIDVALIDITY as it goes).
        other = ImapSource(self._job, self._options)
        other._delimiter = self._delimiter
        return other

    def close(self) -> None:
        logout(self._client)

    # -- helpers -----------------------------------------------------------------------

    def _select(self, name: str) -> dict[bytes, Any]:
        with imap_errors(f"{self._what}, folder {name!r}"):
            try:
                info: dict[bytes, Any] = self._client.select_folder(name, readonly=True)
            except PermanentError as exc:
                raise FolderRefused(str(exc)) from exc
        self._selected = name
        return info


# RFC 6154 SPECIAL-USE attributes the folder map understands.
_SPECIAL_USE = {"\\sent", "\\junk", "\\trash", "\\drafts", "\\archive"}
# Folders that hold no messages of their own: not selectable, or RFC 6154 virtual
# views (\All, \Flagged: Gmail's All Mail, Starred) whose mail is also in a real folder.
_NOT_COPIED = {"\\noselect", "\\nonexistent", "\\all", "\\flagged"}


def _list(client: IMAPClient) -> dict[int, Listed]:
    """Every message of the selected folder, read with `listing.parse_listing` (an eighth
    of the CPU of imapclient's general parser), or with imapclient's parser where the
    server's answer holds anything that reader does not expect.  imaplib's public `uid`
    runs the command: imapclient would take "1:*" for one UID, and needs a SEARCH first."""
    typ, data = client._imap.uid("FETCH", "1:*", LISTING_ITEMS)
    if typ != "OK":
        raise IMAPClientError(f"fetch failed: {as_text(data[0] if data else '')}")
    return read_listing(data)


def read_listing(data: RawFetch) -> dict[int, Listed]:
    """The listing FETCH's answers by UID: the fast reading, else imapclient's."""
    listed = parse_listing(data)
    if listed is not None:
        return listed
    parsed = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
    return {
        int(uid): Listed(
            uid=int(uid),
            size=int(d[b"RFC822.SIZE"]),
            internaldate=_aware(d.get(b"INTERNALDATE")),
            flags=tuple(as_text(f) for f in d.get(b"FLAGS", ())),
            fields=d.get(FIELDS_ITEM),
        )
        for uid, d in parsed.items()
    }


def _relative_path(name: str, delimiter: str, root: str) -> tuple[str, ...] | None:
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


def _aware(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def parse_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed.tzinfo is None:
        return None
    return parsed

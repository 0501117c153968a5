"""IMAP source adapter: lists a mailbox (or the part under a root folder) and
fetches message bytes, newest-first batches grouped by folder."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.bodies import BODY_ITEMS
from migrator.connectors.imap.changes import (
    enable_modseqs,
    folder_state,
    listed_statuses,
)
from migrator.connectors.imap.connection import (
    as_text,
    connect,
    fetch_all,
    imap_errors,
    logout,
    read_bodies,
    read_listing,
    select_refusal,
)
from migrator.connectors.imap.listing import (
    BARE_ITEMS,
    FIELDS_ITEM,
    LISTING_ITEMS,
    Listed,
    Shared,
    listing_groups,
    listing_ranges,
    message_ref,
    relative_path,
)
from migrator.connectors.imap.sourcesync import ImapSourceSync
from migrator.errors import (
    ErrorCode,
    FolderRefused,
    PermanentError,
    TransientError,
)
from migrator.headers import first, parse_date, read_fields, received_date
from migrator.model import ConnectOptions, MailboxJob
from migrator.plan import MessageRef, fetch_windows, is_sane
from migrator.recognition import header_end
from migrator.sources.base import SourceFolder
from migrator.syncstate import FolderState

# A fetch round trip carries at most this many messages or bytes: big enough to
# hide latency, small enough that memory stays flat.
FETCH_BATCH_COUNT = 100
FETCH_BATCH_BYTES = 8 * 1024 * 1024
# And while its messages hold less than FETCH_SMALL_BYTES, more, up to FETCH_SMALL_COUNT:
# newest first, a window spans every folder, and each costs an EXAMINE, which in a folder
# of 700,000 messages costs Dovecot about 8 ms, more than the FETCH of 100 small messages.
FETCH_SMALL_COUNT = 500
FETCH_SMALL_BYTES = 1024 * 1024
# The first window of a fetch: about one batch of appends (MULTIAPPEND_BATCH), so the
# first append goes out after a short read rather than a whole window's.
FIRST_WINDOW = 25
# Messages a listing FETCH asks for at once, about: the answers of a whole folder of a
# million messages would be held at once otherwise.
LISTING_CHUNK = 20_000
# Folders whose listings are asked for in one round trip, at most (wire.examine_fetch).
LISTING_FOLDERS = 64
# Header blocks asked for in one round trip, for recognition.
HEADS_BATCH_COUNT = 500


class ImapSource(ImapSourceSync):
    def __init__(
        self,
        job: MailboxJob,
        options: ConnectOptions,
        *,
        fetch_window: int = 0,
        modseqs: bool = True,
    ) -> None:
        self._job = job
        self._options = options
        self._fetch_window = fetch_window  # as told (0: FETCH_BATCH_COUNT, growing)
        self._fetch_count = fetch_window or FETCH_BATCH_COUNT
        self._what = f"source mailbox {job.source_identity}"
        self._client: IMAPClient = connect(
            job.source_server, job.source_credentials, options, what=self._what
        )
        self._selected: str | None = None
        self._uidvalidity = 0  # the selected folder's
        self._delimiter = "/"
        # Message-IDs tell an \All view's own mail apart (migrator.listing): kept until
        # the folder list shows there is no such view.
        self._keep_message_ids = True
        self._listed: dict[str, FolderState] = {}
        self._states: dict[str, FolderState] | None = None  # LIST-STATUS, read once
        self._statuses: dict[str, dict[bytes, int]] | None = None  # MESSAGES, read once
        # RFC 7162: with CONDSTORE (or QRESYNC) enabled, SELECT reports HIGHESTMODSEQ, which
        # the next pass asks for changes since.  A second session only fetches: none.
        enabled = enable_modseqs(self._client, self._what) if modseqs else None
        self._modseqs, self._qresync = enabled is not None, enabled == "QRESYNC"

    # -- listing -----------------------------------------------------------------------

    def list_folders(self, *, with_states: bool = False) -> list[SourceFolder]:
        """`with_states`: every folder's state read in the same round trip, where the
        server can (ImapSourceSync.list_folders_with_states)."""
        listed = self.listed_folders(with_states=with_states)
        folders = [folder for folder, flags in listed if not flags & _NOT_COPIED]
        self._keep_message_ids = any(f.is_all_mail for f in folders)
        return folders

    def listed_folders(self, *, with_states: bool = False) -> list[tuple[SourceFolder, set[str]]]:
        """Every folder under the root with its LIST flags, lower-cased (\\Noselect ones
        left out); RFC 6154 flags the folder map reads are in its `special_use`."""
        root = (self._job.source_root_folder or "").strip()
        with imap_errors(self._what):
            listed = self._list(with_states)
        folders: list[tuple[SourceFolder, set[str]]] = []
        for flags, delimiter, name in listed:
            flag_names = {as_text(f) for f in flags}
            lowered = {f.lower() for f in flag_names}
            if lowered & _NOT_SELECTABLE:
                continue
            name = as_text(name)
            delim = as_text(delimiter) if delimiter else ""
            if delim:
                self._delimiter = delim
            path = relative_path(name, delim, root)
            if path is None:
                continue
            special = frozenset(f for f in flag_names if f.lower() in _SPECIAL_USE)
            folders.append((SourceFolder(name=name, path=path, special_use=special), lowered))
        if root and not folders:
            raise FolderRefused(
                f"{self._what}: root folder {root!r} not found or empty of folders",
                code=ErrorCode.NONEXISTENT,
            )
        return folders

    @property
    def client(self) -> IMAPClient:
        return self._client

    @property
    def what(self) -> str:
        return self._what

    @property
    def fetch_count(self) -> int:
        return self._fetch_count

    def has_capability(self, name: str) -> bool:
        with imap_errors(self._what):
            return bool(self._client.has_capability(name))

    def select(self, name: str) -> dict[bytes, Any]:
        """SELECT (read-only) `name`: its SELECT answer (FolderRefused if it cannot)."""
        return self._select(name)

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        what = f"{self._what}, folder {folder.name!r}"
        info = self._select(folder.name)
        state = folder_state(info)
        self._listed[folder.name] = state
        uidvalidity = state.uidvalidity
        exists = int(info.get(b"EXISTS", 0))
        if exists == 0:
            return []
        shared = Shared()
        refs: list[MessageRef] = []
        for low, high in listing_ranges(exists, int(info.get(b"UIDNEXT", 0)), LISTING_CHUNK):
            uids = f"{low}:{high if high else '*'}"
            with imap_errors(what):
                listed = (
                    fetch_all(self._client, LISTING_ITEMS, FIELDS_ITEM, uids)
                    if self._keep_message_ids
                    else fetch_all(self._client, BARE_ITEMS, None, uids)
                )
            # "N:*" past the last UID names the last message, listed already.
            inside = {u: m for u, m in listed.items() if u >= low and (not high or u <= high)}
            del listed
            refs += self._refs(folder, uidvalidity, inside, what, shared)
        return refs

    def list_many(
        self, folders: Sequence[SourceFolder]
    ) -> Iterator[tuple[SourceFolder, list[MessageRef]]]:
        """list_messages of each of `folders`, in order, with a round trip per group of
        folders rather than two per folder: the folders LIST-STATUS counts at most
        LISTING_CHUNK messages in are asked for together (wire.examine_fetch), a larger
        one (or every one, without LIST-STATUS) alone, in ranges."""
        counts = self._counts()
        sizes = [counts.get(f.name, {}).get(b"MESSAGES") for f in folders]
        for indices, together in listing_groups(sizes, LISTING_CHUNK, LISTING_FOLDERS):
            group = [folders[i] for i in indices]
            if together:
                yield from self._list_together(group)
            else:
                yield group[0], self.list_messages(group[0])

    def _list_together(
        self, folders: list[SourceFolder]
    ) -> Iterator[tuple[SourceFolder, list[MessageRef]]]:
        """The folders' listings, all asked for at once; the answers are all read before
        any is looked at (a message with an absurd date needs a FETCH of its own)."""
        items, item = (LISTING_ITEMS, FIELDS_ITEM) if self._keep_message_ids else (BARE_ITEMS, None)
        answers: list[tuple[SourceFolder, Any, dict[int, Listed] | Exception]] = []
        self._selected = None
        with imap_errors(self._what):
            steps = [imapwire.Step(f.name, True, "1:*") for f in folders]
            for folder, answer in zip(
                folders, imapwire.examine_fetch(self._client, steps, items), strict=True
            ):
                if answer.refused is not None:
                    what = f"{self._what}, folder {folder.name!r}"
                    answers.append((folder, None, select_refusal(answer.refused, what)))
                    self._selected = None  # a failed EXAMINE leaves none selected
                    continue
                self._selected = folder.name
                self._uidvalidity = int(answer.info.get(b"UIDVALIDITY", 0))
                answers.append((folder, answer.info, read_listing(answer.fetched, item)))
        shared = Shared()
        now = datetime.now(UTC)
        for folder, info, listed in answers:
            if isinstance(listed, Exception):
                raise listed
            state = self._listed[folder.name] = folder_state(info)
            what = f"{self._what}, folder {folder.name!r}"
            if any(
                m.internaldate is None or not is_sane(m.internaldate, now) for m in listed.values()
            ):
                self._select(folder.name)  # _dates fetches in the selected folder
                if self._uidvalidity != state.uidvalidity:
                    raise TransientError(f"{what}: UIDVALIDITY changed; re-planning")
            yield folder, self._refs(folder, state.uidvalidity, listed, what, shared)

    def _refs(
        self,
        folder: SourceFolder,
        uidvalidity: int,
        listed: dict[int, Listed],
        what: str,
        shared: Shared | None = None,
    ) -> list[MessageRef]:
        now = datetime.now(UTC)
        shared = shared if shared is not None else Shared()
        absurd = [
            uid
            for uid, m in listed.items()
            if m.internaldate is None or not is_sane(m.internaldate, now)
        ]
        dates = self._dates(folder.name, absurd, what) if absurd else {}
        return [
            message_ref(folder.name, uidvalidity, message, dates.get(uid), shared)
            for uid, message in listed.items()
        ]

    def _dates(
        self, folder: str, uids: list[int], what: str
    ) -> dict[int, tuple[datetime | None, datetime | None]]:
        """The newest Received date and the Date header of messages whose INTERNALDATE is
        missing or absurd (a restored backup dated 1970): their order falls back to them."""
        if self._selected != folder:
            self._select(folder)
        with imap_errors(what):
            fetched = self._client.fetch(uids, ["BODY.PEEK[HEADER.FIELDS (RECEIVED DATE)]"])
        dates: dict[int, tuple[datetime | None, datetime | None]] = {}
        for uid, data in fetched.items():
            block = data.get(b"BODY[HEADER.FIELDS (RECEIVED DATE)]") or b""
            found = read_fields(block, ("received", "date"))
            dates[int(uid)] = (
                received_date(first(found, "received")),
                parse_date(first(found, "date")),
            )
        return dates

    # -- fetching ----------------------------------------------------------------------

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """Message bytes in the order given; one round trip per window: the FETCH of each
        folder of the window, and the EXAMINE before it where another folder is selected,
        all sent before the answers are read (wire.examine_fetch)."""
        for window in self._windows(refs):
            by_folder: dict[str, list[MessageRef]] = {}
            for ref in window:
                by_folder.setdefault(ref.folder, []).append(ref)
            # The folder selected already first: a SELECT of a large folder costs the
            # server more than a FETCH of a window.  The messages still go in window order.
            groups = sorted(by_folder.items(), key=lambda group: group[0] != self._selected)
            steps: list[imapwire.Step] = []
            selected = self._selected
            for folder, members in groups:
                uids = ",".join(r.uid for r in members)
                steps.append(imapwire.Step(folder, folder != selected, uids))
                selected = folder
            bodies = self._bodies(steps, by_folder)
            for ref in window:
                body = bodies.pop((ref.folder, ref.uid), None)
                if body is None:
                    # Expunged since listing: nothing to copy, and nothing lost.
                    continue
                yield ref, body

    def _bodies(
        self, steps: list[imapwire.Step], by_folder: dict[str, list[MessageRef]]
    ) -> dict[tuple[str, str], bytes]:
        """The bodies the steps fetch, by (folder, UID).  A folder rebuilt since it was
        listed (another UIDVALIDITY: its UIDs mean other messages now) is re-planned
        rather than the wrong mail copied."""
        bodies: dict[tuple[str, str], bytes] = {}
        with imap_errors(self._what):
            for step, answer in zip(
                steps, imapwire.examine_fetch(self._client, steps, BODY_ITEMS), strict=True
            ):
                what = f"{self._what}, folder {step.folder!r}"
                if answer.refused is not None:
                    self._selected = None
                    raise select_refusal(answer.refused, what)
                if step.examine:
                    self._selected = step.folder
                    self._uidvalidity = int(answer.info.get(b"UIDVALIDITY", 0))
                if self._uidvalidity != by_folder[step.folder][0].uidvalidity:
                    raise TransientError(f"{what}: UIDVALIDITY changed; re-planning")
                for uid, body in read_bodies(answer.fetched).items():
                    bodies[(step.folder, str(uid))] = body
        return bodies

    def _windows(self, refs: Sequence[MessageRef]) -> Iterator[Sequence[MessageRef]]:
        """fetch_windows of `refs`, the first of FIRST_WINDOW messages at most: the target
        waits for the first messages, and at a distance a full window takes long.  A few
        more than that (an incremental pass's new mail) go in one window: a tail shorter
        than the head is not worth a round trip of its own."""
        head = min(FIRST_WINDOW, self._fetch_count)
        if len(refs) < 2 * head and len(refs) <= self._fetch_count:
            head = len(refs)
        yield from fetch_windows(refs[:head], head, FETCH_BATCH_BYTES)
        # A window size told (tests) is kept exactly; the default grows for small messages.
        grown = not self._fetch_window
        yield from fetch_windows(
            refs, self._fetch_count, FETCH_BATCH_BYTES, start=head,
            small_count=FETCH_SMALL_COUNT if grown else 0,
            small_bytes=FETCH_SMALL_BYTES if grown else 0,
        )  # fmt: skip

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        by_folder: dict[str, list[MessageRef]] = {}
        for ref in refs:
            by_folder.setdefault(ref.folder, []).append(ref)
        for folder, members in by_folder.items():
            self._select(folder)
            what = f"{self._what}, folder {folder!r}"
            for start in range(0, len(members), HEADS_BATCH_COUNT):
                chunk = members[start : start + HEADS_BATCH_COUNT]
                with imap_errors(what):
                    fetched = self._client.fetch([int(r.uid) for r in chunk], ["BODY.PEEK[HEADER]"])
                whole: list[MessageRef] = []
                for ref in chunk:
                    header = fetched.get(int(ref.uid), {}).get(b"BODY[HEADER]")
                    if header is None:
                        continue  # expunged since listing
                    if header_end(header) is None:
                        # No empty line where the server ends the header (a message that
                        # is all header, or a server that reads it otherwise): the whole
                        # message, so both sides find the header block by the same rule.
                        whole.append(ref)
                        continue
                    yield ref, header
                if whole:
                    yield from self.fetch(whole)

    def messages_held(self) -> int | None:
        counts = self._counts()
        return sum(c[b"MESSAGES"] for c in counts.values()) if counts else None

    def _counts(self) -> dict[str, dict[bytes, int]]:
        """Each folder's MESSAGES (RFC 5819 LIST-STATUS), read once: what list_many
        groups folders by (nothing without LIST-STATUS)."""
        if self._statuses is None:
            self._statuses = listed_statuses(self._client, self._what, (b"MESSAGES",))
        return self._statuses

    def session(self) -> ImapSource:
        # UIDs and UIDVALIDITY are the folder's, not the connection's: a second
        # connection fetches what this one listed (and checks UIDVALIDITY as it goes).
        other = ImapSource(self._job, self._options, fetch_window=self._fetch_window, modseqs=False)
        other._delimiter = self._delimiter
        return other

    def close(self) -> None:
        logout(self._client)

    # -- helpers -----------------------------------------------------------------------

    def _select(self, name: str) -> dict[bytes, Any]:
        self._selected = None  # a failed SELECT leaves no folder selected (RFC 3501 6.3.1)
        try:
            with imap_errors(f"{self._what}, folder {name!r}"):
                info: dict[bytes, Any] = self._client.select_folder(name, readonly=True)
        except PermanentError as exc:
            if type(exc) is not PermanentError:
                raise
            raise FolderRefused(str(exc), code=exc.code) from exc
        self._selected = name
        self._uidvalidity = int(info.get(b"UIDVALIDITY", 0))
        return info


# RFC 6154 SPECIAL-USE attributes the folder map understands, and \All, which the
# copier reads last for the mail no other folder holds (Gmail's archived mail).
_SPECIAL_USE = {"\\sent", "\\junk", "\\trash", "\\drafts", "\\archive", "\\all"}
# Folders that hold no messages of their own: not selectable, or the RFC 6154 virtual
# view \Flagged (Gmail's Starred), whose mail is also in a real folder or in \All.
_NOT_SELECTABLE = {"\\noselect", "\\nonexistent"}
_NOT_COPIED = {*_NOT_SELECTABLE, "\\flagged"}

"""Microsoft Graph source: the mail folder tree (childFolders, recursively), each folder's
messages newest first (receivedDateTime desc) with read state, flag, categories and size,
and each message's MIME from /messages/{id}/$value, four at once; for incremental passes,
what changed in a folder since the delta link the last pass saved (delta.py)."""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from migrator.connectors.graph.client import MAX_IN_FLIGHT, GraphClient, graph_error, query
from migrator.connectors.graph.delta import DeltaLister
from migrator.connectors.graph.props import MESSAGE_SIZE, expand_properties, parse_time
from migrator.connectors.graph.settings import GraphSettings, address_url
from migrator.errors import ErrorCode, FolderRefused, LoginFailed, MailboxNotReady
from migrator.model import MailboxJob
from migrator.plan import MessageRef
from migrator.sources.base import SourceFolder
from migrator.syncstate import FolderChanges, FolderState

log = logging.getLogger(__name__)

# Well-known folders -> the RFC 6154 flag the folder map understands.
SPECIAL_USE = {
    "sentitems": "\\Sent",
    "junkemail": "\\Junk",
    "deleteditems": "\\Trash",
    "drafts": "\\Drafts",
    "archive": "\\Archive",
}
LIST_PAGE = 1000  # Graph's largest $top for messages
# Messages asked for ahead of the one the copier takes (the pool runs four at once).
READ_AHEAD = 2 * MAX_IN_FLIGHT
READ_AHEAD_BYTES = 32 * 1024 * 1024
FOLDER_PAGE = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LISTED = "receivedDateTime,sentDateTime,isRead,isDraft,flag,categories,internetMessageId"


class GraphSource:
    def __init__(self, job: MailboxJob, settings: GraphSettings) -> None:
        """Opens the mailbox now: one that does not exist, or that the app may not read,
        fails the mailbox here with Graph's words."""
        self._job = job
        self._what = f"source mailbox {job.source_identity}"
        settings = dataclasses.replace(settings, url=address_url(job.source_server))
        self._client = GraphClient(settings, job.source_identity, None)
        self._folders: dict[str, str] = {}  # SourceFolder.name -> folder id
        self._pool = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="graph-read")
        self.lister = DeltaLister(self._client, _listing_url)
        self._listed: dict[str, FolderState] = {}  # as list_messages found each folder
        try:
            self._inbox = self._folder_id("inbox")
        except MailboxNotReady as exc:
            raise LoginFailed(str(exc), code=ErrorCode.AUTHORIZATIONFAILED) from None

    def _folder_id(self, ref: str) -> str:
        body = self._client.call("GET", f"/mailFolders/{ref}" + query(select="id"), what=self._what)
        return str(body["id"])

    # -- listing -------------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        special = self._special_ids()
        root = tuple(p for p in (self._job.source_root_folder or "").split("/") if p)
        folders: list[SourceFolder] = []
        for folder_id, full in self._walk("msgfolderroot", ()):
            if full[: len(root)] != root:
                continue
            name = "/".join(full)
            path = full[len(root) :] or ("INBOX",)
            if not root and full[0] == special.get("inbox-name"):
                path = ("INBOX", *full[1:])  # whatever the mailbox's language calls it
            flag = SPECIAL_USE.get(special.get(folder_id, ""))
            self._folders[name] = folder_id
            folders.append(SourceFolder(name, path, frozenset({flag} if flag else ())))
        if root and not folders:
            raise FolderRefused(
                f"{self._what}: root folder {'/'.join(root)!r} not found",
                code=ErrorCode.NONEXISTENT,
            )
        return folders

    def _walk(self, parent: str, above: tuple[str, ...]) -> Iterator[tuple[str, tuple[str, ...]]]:
        path = f"/mailFolders/{parent}/childFolders" + query(
            select="id,displayName,childFolderCount", top=str(FOLDER_PAGE)
        )
        for child in list(self._client.pages(path, what=self._what)):
            full = (*above, str(child["displayName"]))
            yield str(child["id"]), full
            if child.get("childFolderCount"):
                yield from self._walk(str(child["id"]), full)

    def _special_ids(self) -> dict[str, str]:
        """Folder id -> well-known name of the default folders (and the Inbox's name)."""
        found: dict[str, str] = {self._inbox: "inbox"}
        for name in SPECIAL_USE:
            answer = self._client.request(
                "GET", f"/mailFolders/{name}" + query(select="id"), what=self._what
            )
            if answer.ok:
                found[str(answer.body["id"])] = name
        inbox = self._client.call(
            "GET", "/mailFolders/inbox" + query(select="displayName"), what=self._what
        )
        found["inbox-name"] = str(inbox.get("displayName", ""))
        return found

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        """Newest first; a later pass in this process reads only what messages/delta
        says changed since the last."""
        what = f"{self._what}, folder {folder.name!r}"
        folder_id = self._folders[folder.name]
        uidvalidity = _stable_int(folder_id)
        path = f"/mailFolders/{folder_id}/messages" + query(
            select=_LISTED,
            expand=expand_properties(MESSAGE_SIZE),
            orderby="receivedDateTime desc",
            top=str(LIST_PAGE),
        )

        def to_ref(item: dict[str, Any]) -> MessageRef:
            return _ref(folder.name, uidvalidity, item)

        def full() -> list[MessageRef]:
            return [to_ref(item) for item in self._client.pages(path, what=what)]

        refs = [
            # Kept from an earlier pass: the folder may have been renamed since.
            r if r.folder == folder.name else r.replace(folder=folder.name)
            for r in self.lister.listing(folder_id, full, to_ref, what)
        ]
        link = self.lister.kept_link(folder_id)
        if link is not None:
            self._listed[folder.name] = FolderState(uidvalidity, 0, None, link)
        return sorted(refs, key=lambda r: r.internaldate or _EPOCH, reverse=True)

    # -- incremental passes (messages/delta) ---------------------------------------------

    def listed_state(self, name: str) -> FolderState | None:
        return self._listed.get(name)

    def folder_state(self, folder: SourceFolder) -> FolderState:
        """The folder's id as its UIDVALIDITY (a rename keeps it); no request."""
        return FolderState(_stable_int(self._folders[folder.name]), 0)

    def changes(self, folder: SourceFolder, since: FolderState) -> FolderChanges | None:
        """What the saved delta link says changed.  Graph does not tell a new message from
        a changed one: each is given as new (one copied already is skipped by its
        checkpoint) and with its flags (a copy's flags follow where they differ)."""
        what = f"{self._what}, folder {folder.name!r}"
        folder_id = self._folders[folder.name]
        uidvalidity = _stable_int(folder_id)
        if since.sync is None or since.uidvalidity != uidvalidity:
            return None
        delta = self.lister.since(
            since.sync, lambda item: _ref(folder.name, uidvalidity, item), what
        )
        if delta is None:
            log.warning(
                "source folder %r: its delta link was refused (410 Gone): listed whole, "
                "the copies at the target recognised",
                folder.name,
            )
            return None
        return FolderChanges(
            FolderState(uidvalidity, 0, None, delta.link),
            new=delta.refs,
            flags={r.uid: r.flags for r in delta.refs},
            vanished=delta.removed,
        )

    # -- fetching ------------------------------------------------------------------------

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """Each message's MIME, four requests at once, in the order given; at most
        READ_AHEAD messages (READ_AHEAD_BYTES, by their listed sizes) asked ahead of the
        one handed on, whatever the window, and none asked once the reader lets go."""
        pending: collections.deque[tuple[MessageRef, Future[bytes | None]]] = collections.deque()
        waiting = iter(refs)
        ahead = 0
        try:
            while True:
                while len(pending) < READ_AHEAD and (not pending or ahead < READ_AHEAD_BYTES):
                    ref = next(waiting, None)
                    if ref is None:
                        break
                    pending.append((ref, self._pool.submit(self._mime, ref)))
                    ahead += ref.size
                if not pending:
                    return
                ref, future = pending.popleft()
                ahead -= ref.size
                mime = future.result()
                if mime is not None:
                    yield ref, mime
        finally:
            for _, future in pending:
                future.cancel()

    def _mime(self, ref: MessageRef) -> bytes | None:
        what = f"{self._what}, message in {ref.folder!r}"
        answer = self._client.request("GET", f"/messages/{ref.uid}/$value", what=what)
        if answer.status == 404:
            return None  # deleted since listing: the copier names it
        if not answer.ok or not isinstance(answer.body, bytes):
            raise graph_error(answer, what)
        return answer.body

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """Graph has no header-only read that keeps the bytes: the whole MIME."""
        return self.fetch(refs)

    def session(self) -> None:
        # Four requests in flight per mailbox is Graph's limit: one reader holds them all.
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()


def _ref(folder: str, uidvalidity: int, item: dict[str, Any]) -> MessageRef:
    flags = ["\\Seen"] if item.get("isRead") else []
    if (item.get("flag") or {}).get("flagStatus") == "flagged":
        flags.append("\\Flagged")
    if item.get("isDraft"):
        flags.append("\\Draft")
    flags += [str(c) for c in item.get("categories") or [] if c and " " not in str(c)]
    props = {p.get("id"): p.get("value") for p in item.get("singleValueExtendedProperties") or []}
    try:
        size = int(props.get(MESSAGE_SIZE) or 0)
    except ValueError:
        size = 0
    message_id = item.get("internetMessageId")
    return MessageRef(
        folder=folder,
        uidvalidity=uidvalidity,
        uid=str(item["id"]),
        size=size,
        internaldate=parse_time(item.get("receivedDateTime")),
        date_header=parse_time(item.get("sentDateTime")),
        flags=tuple(flags),
        message_id=str(message_id).strip() if message_id else None,
    )


def _listing_url(message_id: str) -> str:
    return f"/messages/{message_id}" + query(select=_LISTED, expand=expand_properties(MESSAGE_SIZE))


def _stable_int(text: str) -> int:
    """A stable 63-bit int from a folder id (a MessageRef's uidvalidity)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1

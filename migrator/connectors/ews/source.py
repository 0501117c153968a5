"""EWS source adapter: the folder tree under the message folder root (FindFolder), every
message of a folder without its body and the SyncState it was listed at (SyncFolderItems
from no state), and MimeContent in batches (GetItem); for incremental passes, what
changed in a folder since the last (SyncFolderItems, see changes.py).

Calendar, contact and task folders hold no MIME mail: they are listed apart
(`non_mail_folders`), copied item for item by ExportItems/UploadItems when the target is
Exchange too (`copy_non_mail`), and counted as skipped when it is not.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from migrator.connectors.ews.account import ews_call, open_account
from migrator.connectors.ews.changes import (
    folder_changes,
    initial_listing,
)
from migrator.connectors.ews.props import (
    FINGERPRINT_FIELDS,
    fingerprint,
    register_properties,
    stable_int,
)
from migrator.connectors.ews.settings import EwsSettings, source_endpoint
from migrator.connectors.ews.target import EwsTarget
from migrator.errors import ErrorCode, FolderRefused, PermanentError, QuotaExceeded, TransientError
from migrator.model import MailboxJob
from migrator.plan import MessageRef, fetch_windows
from migrator.report import MailboxResult, MailboxState
from migrator.sources.base import SourceFolder
from migrator.syncstate import FolderChanges, FolderState

# Distinguished folders -> the RFC 6154 flag the folder map understands.
_SPECIAL_USE = {
    "sentitems": "\\Sent",
    "junkemail": "\\Junk",
    "deleteditems": "\\Trash",
    "drafts": "\\Drafts",
}
# Folder classes of items that are not MIME mail -> the default folder they go to.
NON_MAIL = {
    "IPF.Appointment": "calendar",
    "IPF.Contact": "contacts",
    "IPF.Task": "tasks",
    "IPF.StickyNote": "notes",
    "IPF.Journal": "journal",
}
FETCH_BATCH_COUNT = 50
FETCH_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class NonMailFolder:
    name: str
    kind: str  # the default folder its items belong in: calendar, contacts, tasks, ...
    count: int


class EwsSource:
    def __init__(self, job: MailboxJob, settings: EwsSettings) -> None:
        register_properties()
        self._job = job
        self._what = f"source mailbox {job.source_identity}"
        if settings.endpoint is None:
            settings = dataclasses.replace(settings, endpoint=source_endpoint(job.source_server))
        self._account: Any = open_account(
            settings, job.source_identity, job.source_credentials, what=self._what
        )
        self._root: Any = ews_call(self._what, lambda: self._account.msg_folder_root)
        self._folders: dict[str, Any] = {}  # SourceFolder.name -> exchangelib folder
        self._non_mail: list[tuple[NonMailFolder, Any]] = []
        self._listed: dict[str, FolderState] = {}  # as list_messages found each folder

    # -- listing -----------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        root = tuple(p for p in (self._job.source_root_folder or "").split("/") if p)
        walked = ews_call(self._what, lambda: list(self._root.walk()))
        special_of = self._special_ids()
        by_id = {f.id: f for f in walked}
        folders: list[SourceFolder] = []
        self._non_mail = []
        for folder in walked:
            full = _path(folder, by_id, self._root.id)
            if full is None or full[: len(root)] != root:
                continue
            name = "/".join(full)
            folder_class = str(folder.folder_class or "")
            kind = NON_MAIL.get(folder_class)
            if kind is not None:
                info = NonMailFolder(name, kind, int(folder.total_count or 0))
                self._non_mail.append((info, folder))
                continue
            if folder_class not in ("", "IPF.Note") and not folder_class.startswith("IPF.Note."):
                continue  # RSS configuration, conversation settings: no mail of their own
            path = full[len(root) :] or ("INBOX",)  # the root folder stands for the Inbox
            special = special_of.get(folder.id)
            if special == "inbox" and not root:
                path = ("INBOX",)  # whatever the mailbox's language calls it
            flag = _SPECIAL_USE.get(special or "")
            self._folders[name] = folder
            folders.append(
                SourceFolder(name=name, path=path, special_use=frozenset({flag} if flag else ()))
            )
        if root and not folders:
            raise FolderRefused(
                f"{self._what}: root folder {'/'.join(root)!r} not found",
                code=ErrorCode.NONEXISTENT,
            )
        return folders

    def _special_ids(self) -> dict[str, str]:
        """FolderId -> distinguished name of the default folders (Inbox, Sent Items...)."""
        found = {}
        for distinguished, attr in _ACCOUNT_ATTR.items():
            try:
                folder = ews_call(self._what, functools.partial(getattr, self._account, attr))
            except FolderRefused:
                continue  # a mailbox without that default folder
            found[folder.id] = distinguished
        return found

    def non_mail_folders(self) -> list[NonMailFolder]:
        """Calendar, contact, task, note and journal folders seen by list_folders."""
        if not self._non_mail and not self._folders:
            self.list_folders()
        return [info for info, _ in self._non_mail]

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        what = f"{self._what}, folder {folder.name!r}"
        refs, state = initial_listing(self._folders[folder.name], folder.name, what)
        self._listed[folder.name] = state
        return refs

    # -- incremental passes (SyncFolderItems) --------------------------------------------

    def listed_state(self, name: str) -> FolderState | None:
        return self._listed.get(name)

    def folder_state(self, folder: SourceFolder) -> FolderState:
        """The folder's id as its UIDVALIDITY (a rename keeps it); no request."""
        return FolderState(stable_int(self._folders[folder.name].id), 0)

    def changes(self, folder: SourceFolder, since: FolderState) -> FolderChanges | None:
        what = f"{self._what}, folder {folder.name!r}"
        return folder_changes(self._account, self._folders[folder.name], folder.name, since, what)

    # -- fetching ----------------------------------------------------------------------

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """MimeContent in the order given, one GetItem per window."""
        for window in fetch_windows(refs, FETCH_BATCH_COUNT, FETCH_BATCH_BYTES):
            ids = [r.uid for r in window]

            def get(ids: list[str] = ids) -> list[Any]:
                pairs = [(i, None) for i in ids]
                return list(self._account.fetch(ids=pairs, only_fields=["mime_content"]))

            items = ews_call(f"{self._what}, fetching {len(ids)} messages", get)
            for ref, item in zip(window, items, strict=True):
                if isinstance(item, Exception) or not item.mime_content:
                    continue  # deleted since listing, or not sent: the copier names it
                yield ref, bytes(item.mime_content)

    def export_non_mail(self) -> list[tuple[NonMailFolder, list[tuple[tuple[str, ...], str]]]]:
        """Per non-mail folder: (fingerprint, ExportItems data) of each item."""
        result = []
        for info, folder in self._non_mail:
            what = f"{self._what}, folder {info.name!r}"
            listed = ews_call(what, functools.partial(_fingerprinted, folder))
            items = [i for i in listed if not isinstance(i, Exception)]
            blobs = ews_call(what, functools.partial(_exported, self._account, items))
            pairs = [
                (fingerprint(item), blob)
                for item, blob in zip(items, blobs, strict=True)
                if not isinstance(blob, Exception)
            ]
            result.append((info, pairs))
        return result

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        """EWS has no header-only fetch that keeps the bytes: the whole MimeContent."""
        return self.fetch(refs)

    def session(self) -> None:
        # One Exchange session per mailbox: EWS throttling counts concurrent requests per
        # user.
        return None

    def close(self) -> None:
        return None


def _fingerprinted(folder: Any) -> list[Any]:
    return list(folder.all().only(*FINGERPRINT_FIELDS))


def _exported(account: Any, items: list[Any]) -> list[Any]:
    return list(account.export(items)) if items else []


def copy_non_mail(
    result: MailboxResult,
    open_source: Callable[[], EwsSource],
    open_target: Callable[[], EwsTarget] | None,
) -> MailboxResult:
    """After the mail: upload calendar, contact and task items to the matching default
    folders of an EWS target (those already there, by fingerprint, are not sent again),
    or count them as skipped when the target cannot hold them (IMAP)."""
    try:
        source = open_source()
        try:
            source.list_folders()
            if open_target is None:
                skipped = sum(info.count for info in source.non_mail_folders())
                return dataclasses.replace(result, skipped_non_mail=skipped)
            exported = source.export_non_mail()
        finally:
            source.close()
        target = open_target()
        try:
            copied = 0
            for info, pairs in exported:
                name = target.open_default(info.kind)
                present = target.fingerprints(name)
                todo = []
                for mark, blob in pairs:
                    if present[mark] > 0:
                        present[mark] -= 1
                    else:
                        todo.append(blob)
                outcomes = target.upload(name, todo) if todo else []
                copied += sum(o is None for o in outcomes)
                failed = next((o for o in outcomes if o is not None), None)
                if failed is not None:
                    raise failed
        finally:
            target.close()
    except QuotaExceeded as exc:
        return dataclasses.replace(
            result, state=MailboxState.QUOTA_STOPPED, error=f"non-mail items: {exc}"
        )
    except (PermanentError, TransientError) as exc:
        return dataclasses.replace(
            result, state=MailboxState.FAILED, error=f"non-mail items: {exc}"
        )
    return dataclasses.replace(result, copied_non_mail=copied)


def _path(folder: Any, by_id: dict[str, Any], root_id: str) -> tuple[str, ...] | None:
    """The names from below the message folder root down to `folder`."""
    parts: list[str] = []
    current = folder
    while current is not None:
        parts.append(str(current.name or ""))
        parent = current.parent_folder_id
        parent_id = parent.id if parent is not None else None
        if parent_id == root_id:
            return tuple(reversed(parts))
        current = by_id.get(parent_id) if parent_id is not None else None
    return None


_ACCOUNT_ATTR = {  # distinguished folder -> exchangelib Account property
    "inbox": "inbox",
    "sentitems": "sent",
    "junkemail": "junk",
    "deleteditems": "trash",
    "drafts": "drafts",
}

"""EWS target adapter: default folders are Exchange's distinguished folders, custom paths
are created under the message folder root, and messages go up as MimeContent in batched
CreateItem calls (SaveOnly) with their read state, dates, flag and source key kept."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from exchangelib import Folder, Message
from exchangelib.errors import ErrorQuotaExceeded
from exchangelib.items import SAVE_ONLY, SEND_TO_NONE
from exchangelib.services import CreateItem, UploadItems

from migrator.connectors.ews.account import ews_call, open_account, translate
from migrator.connectors.ews.props import (
    FINGERPRINT_FIELDS,
    FLAG_STATUS_FLAGGED,
    MSGFLAG_READ,
    MSGFLAG_UNSENT,
    aware,
    dump_key,
    ews_datetime,
    fingerprint,
    load_key,
    register_properties,
)
from migrator.connectors.ews.settings import EwsSettings
from migrator.connectors.ews.targetsync import EwsSyncHooks
from migrator.errors import ErrorCode, FolderRefused, MessageRefused, PermanentError, QuotaExceeded
from migrator.foldermap import SpecialFolder, TargetFolder
from migrator.gmail import keyword_label
from migrator.model import Login
from migrator.recognition import TargetCopy, epoch_seconds, message_digest
from migrator.syncstate import Placement
from migrator.targets.base import UNKNOWN_QUOTA, AppendItem, Outcome, QuotaInfo

# SpecialFolder -> the exchangelib Account property of that distinguished folder.
_DISTINGUISHED = {
    SpecialFolder.INBOX: "inbox",
    SpecialFolder.SENT_ITEMS: "sent",
    SpecialFolder.DELETED_ITEMS: "trash",
    SpecialFolder.DRAFTS: "drafts",
    SpecialFolder.JUNK_EMAIL: "junk",
    SpecialFolder.OUTBOX: "outbox",
    SpecialFolder.JOURNAL: "journal",
    SpecialFolder.NOTES: "notes",
    SpecialFolder.CALENDAR: "calendar",
}

# Items per CreateItem call: MIME of 25 ordinary messages is a request of a few MB.
CREATE_BATCH = 25
INDEX_PAGE = 1000
T = TypeVar("T")  # FindItem page size; Exchange answers at most 1000 a page


class _CreateItem(CreateItem):  # type: ignore[misc]
    """CreateItem answering ErrorQuotaExceeded per item, as Exchange sends it, instead of
    raising it for the whole call: the items before it in the batch were stored."""

    ERRORS_TO_CATCH_IN_RESPONSE = (*CreateItem.ERRORS_TO_CATCH_IN_RESPONSE, ErrorQuotaExceeded)


class _UploadItems(UploadItems):  # type: ignore[misc]
    ERRORS_TO_CATCH_IN_RESPONSE = (*UploadItems.ERRORS_TO_CATCH_IN_RESPONSE, ErrorQuotaExceeded)


class EwsTarget(EwsSyncHooks):
    batch_size = CREATE_BATCH
    throttled_seconds = 0.0  # waited out on ErrorServerBusy, as the server asked

    def __init__(self, settings: EwsSettings, credentials: Login | None, identity: str):
        """Opens the mailbox now: one that does not exist or cannot be opened raises a
        PermanentError here, which the copier reports as not_ready before copying."""
        register_properties()
        self._what = f"target mailbox {identity}"
        self.throttled_seconds = 0.0
        self._account: Any = open_account(settings, identity, credentials, what=self._what)
        self._folders: dict[str, Any] = {}
        self._placed: list[Placement | None] = []  # where the last append_batch put each item
        self._root: Any = self._call(self._what, lambda: self._account.msg_folder_root)

    def _call(self, what: str, call: Callable[[], T]) -> T:
        return ews_call(what, call, sleep=self._back_off)

    def _back_off(self, seconds: float) -> None:
        self.throttled_seconds += seconds
        time.sleep(seconds)

    # -- folders -----------------------------------------------------------------------

    def open_folder(self, folder: TargetFolder) -> str:
        name = folder.display()
        if name in self._folders:
            return name
        if folder.special is None:
            current = self._root
        else:
            attr = _DISTINGUISHED[folder.special]
            current = self._call(self._what, lambda: getattr(self._account, attr))
        for part in folder.subpath:
            current = self._child(current, part)
        self._folders[name] = current
        return name

    def open_default(self, distinguished: str) -> str:
        """A default folder by exchangelib's Account property (calendar, contacts, tasks)."""
        name = f"#{distinguished}"
        if name not in self._folders:
            what = f"{self._what}, folder {distinguished}"
            self._folders[name] = self._call(what, lambda: getattr(self._account, distinguished))
        return name

    def fingerprints(self, name: str) -> Counter[tuple[str, ...]]:
        """Non-mail items already in folder `name`, by ews.fingerprint."""
        folder = self._folders[name]
        what = f"{self._what}, folder {name!r}"
        items = self._call(what, lambda: list(folder.all().only(*FINGERPRINT_FIELDS)))
        return Counter(fingerprint(i) for i in items if not isinstance(i, Exception))

    def _child(self, parent: Any, name: str) -> Any:
        what = f"{self._what}, folder {name!r}"
        found = self._call(what, lambda: _named_child(parent, name))
        if found is not None:
            return found
        new = Folder(parent=parent, name=name)
        try:
            self._call(what, new.save)
        except FolderRefused as exc:
            # Made by a parallel pass since we looked: look again (creation is idempotent).
            if exc.code is not ErrorCode.ALREADYEXISTS:
                raise
            self._account.root.clear_cache()
            again = self._call(what, lambda: _named_child(parent, name))
            if again is None:
                raise
            return again
        except PermanentError as exc:
            if type(exc) is not PermanentError:
                raise  # login, quota, not ready: about the mailbox, not this folder
            raise FolderRefused(f"{exc}", code=exc.code) from exc  # only this folder fails
        return new

    # -- index and quota ---------------------------------------------------------------

    def index(self, name: str) -> list[TargetCopy]:
        """The items of the folder, each with the content key and digest it was made from
        (an item this tool did not make has none, and is never taken for a copy)."""
        folder = self._folders[name]

        def read() -> list[Any]:
            query = folder.all().only(
                "migrator_source_key", "is_read", "is_draft", "migrator_flag_status",
                "datetime_received",
            )  # fmt: skip
            query.page_size = INDEX_PAGE
            return list(query)

        copies = []
        for item in self._call(f"{self._what}, folder {name!r}", read):
            if isinstance(item, Exception):
                continue
            stored = load_key(getattr(item, "migrator_source_key", None))
            flags = {"\\seen"} if item.is_read else set()
            if getattr(item, "migrator_flag_status", None) == FLAG_STATUS_FLAGGED:
                flags.add("\\flagged")
            if item.is_draft:
                flags.add("\\draft")
            copies.append(
                TargetCopy(
                    id=str(item.id),
                    key=stored[0] if stored else None,
                    flags=frozenset(flags),
                    date=epoch_seconds(aware(item.datetime_received)),
                    digest=stored[1] if stored else None,
                )
            )
        return copies

    def digests(self, name: str, copies: Sequence[TargetCopy]) -> dict[str, str]:
        # Exchange serves MIME of its own making: only the digest kept on the item counts.
        return {c.id: c.digest for c in copies if c.digest is not None}

    def quota(self) -> QuotaInfo:
        # EWS does not say a mailbox's quota: ErrorQuotaExceeded (or the activation CSV) stops.
        return UNKNOWN_QUOTA

    # -- writing -----------------------------------------------------------------------

    def placed(self) -> list[Placement | None]:
        return list(self._placed)

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        self._placed = []
        outcomes: list[Outcome] = []
        start = 0
        while start < len(items):
            end = start + 1  # CreateItem takes one folder: each run of same-folder items
            while end < len(items) and items[end].folder == items[start].folder:
                end += 1
            run_outcomes = self._create(items[start:end])
            outcomes.extend(run_outcomes)
            stop = next((o for o in run_outcomes if isinstance(o, QuotaExceeded)), None)
            if stop is not None:
                return outcomes + [stop] * (len(items) - end)
            start = end
        return outcomes

    def _create(self, run: Sequence[AppendItem]) -> list[Outcome]:
        folder = self._folders[run[0].folder]
        what = f"{self._what}, folder {run[0].folder!r}"
        messages = [_message(self._account, folder, item) for item in run]

        def call() -> list[Any]:
            service = _CreateItem(account=self._account, chunk_size=len(messages))
            return list(
                service.call(
                    folder=folder,
                    items=messages,
                    message_disposition=SAVE_ONLY,
                    send_meeting_invitations=SEND_TO_NONE,
                )
            )

        results = self._call(what, call)
        outcomes: list[Outcome] = []
        for index, result in enumerate(results):
            if not isinstance(result, Exception):
                outcomes.append(None)
                ident = getattr(result, "id", None)
                self._placed.append(Placement(run[0].folder, 0, ident) if ident else None)
                continue
            self._placed.append(None)
            error = translate(result, what)
            if isinstance(error, QuotaExceeded):
                # The server's own count is the authority: this and every later item
                # count as left (a smaller later one it did store is recognised by index()).
                return outcomes + [error] * (len(run) - index)
            outcomes.append(
                error
                if isinstance(error, MessageRefused)
                # One bad item never stops the batch.
                else MessageRefused(f"{what}: {error}", code=error.code)
            )
        return outcomes

    def upload(self, name: str, blobs: Sequence[str]) -> list[Exception | None]:
        """UploadItems of ExportItems data (non-mail items, full fidelity) into folder `name`."""
        folder = self._folders[name]
        what = f"{self._what}, folder {name!r}"

        def call() -> list[Any]:
            service = _UploadItems(account=self._account, chunk_size=CREATE_BATCH)
            return list(service.call(items=[(folder, (None, False, blob)) for blob in blobs]))

        return [
            translate(r, what) if isinstance(r, Exception) else None for r in self._call(what, call)
        ]

    def session(self) -> None:
        # One Exchange session per mailbox: the tenant's throttling slots count mailboxes.
        return None

    def close(self) -> None:
        # The account's connection pool is exchangelib's, shared by every account of the
        # process with the same endpoint and login; closing it here would break the others.
        self._folders.clear()


def _named_child(parent: Any, name: str) -> Any:
    wanted = name.casefold()
    return next((c for c in parent.children if (c.name or "").casefold() == wanted), None)


def item_categories(flags: Sequence[str]) -> list[str]:
    """An IMAP message's keywords as Exchange categories (a Gmail label as its name, see
    gmail.label_keyword); `$` keywords are clients' own marks ($Forwarded, $Junk, $label1)."""
    return [keyword_label(f) for f in flags if not f.startswith(("\\", "$"))]


def _message(account: Any, folder: Any, item: AppendItem) -> Any:
    lowered = {f.lower() for f in item.flags}
    flags = (MSGFLAG_READ if "\\seen" in lowered else 0) | (
        MSGFLAG_UNSENT if "\\draft" in lowered else 0
    )
    fields: dict[str, Any] = {
        "mime_content": item.message,
        "is_read": "\\seen" in lowered,
        "migrator_message_flags": flags,
    }
    if item.internaldate is not None:
        when = ews_datetime(item.internaldate)
        fields["migrator_delivery_time"] = when
        fields["migrator_submit_time"] = when
    if "\\flagged" in lowered:
        fields["migrator_flag_status"] = FLAG_STATUS_FLAGGED
    categories = item_categories(item.flags)
    if categories:
        fields["categories"] = categories
    if item.key is not None:
        fields["migrator_source_key"] = dump_key(item.key, message_digest(item.message))
    return Message(account=account, folder=folder, **fields)

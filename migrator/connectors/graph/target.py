"""Microsoft Graph target: default folders by their well-known names, custom paths as
childFolders (created idempotently, found again by display name), and messages through
importMime (beta: the MIME as delivered, not a draft), up to four at once; then read
state, flag, categories, the source key and, where importMime did not give it, the
received time, set in one $batch of PATCHes."""

from __future__ import annotations

import base64
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from migrator.connectors.base import UploadLedger
from migrator.connectors.graph.client import (
    MAX_BATCH,
    MAX_IN_FLIGHT,
    GraphClient,
    graph_error,
    query,
)
from migrator.connectors.graph.props import (
    DELIVERY_TIME,
    SOURCE_KEY,
    dump_key,
    expand_properties,
    graph_time,
    load_key,
    parse_time,
)
from migrator.connectors.graph.settings import GraphApi, GraphSettings
from migrator.errors import (
    ErrorCode,
    FolderRefused,
    MailboxNotReady,
    MessageRefused,
    MigrationError,
    PermanentError,
    QuotaExceeded,
)
from migrator.foldermap import SpecialFolder, TargetFolder
from migrator.gmail import keyword_label
from migrator.recognition import TargetCopy, content_key, epoch_seconds, message_digest
from migrator.targets.base import UNKNOWN_QUOTA, AppendItem, Outcome, QuotaInfo

log = logging.getLogger(__name__)

# SpecialFolder -> Graph's well-known folder name (mailFolder resource type).
WELL_KNOWN = {
    SpecialFolder.INBOX: "inbox",
    SpecialFolder.SENT_ITEMS: "sentitems",
    SpecialFolder.DELETED_ITEMS: "deleteditems",
    SpecialFolder.DRAFTS: "drafts",
    SpecialFolder.JUNK_EMAIL: "junkemail",
    SpecialFolder.OUTBOX: "outbox",
}
ROOT = "msgfolderroot"
INDEX_PAGE = 1000  # Graph's largest $top for messages
_SELECT = "isRead,isDraft,flag,receivedDateTime"


class GraphTarget:
    batch_size = MAX_BATCH
    throttled_seconds = 0.0

    def __init__(self, settings: GraphSettings, identity: str, uploads: UploadLedger | None):
        """Opens the mailbox now: one that does not exist, or that the app may not open,
        raises MailboxNotReady here (the copier reports it as not_ready)."""
        self._what = f"target mailbox {identity}"
        self._client = GraphClient(settings, identity, uploads)
        self._v1 = settings.api is GraphApi.V1
        self._folders: dict[str, str] = {}  # display path -> folder id
        self._pool = ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="graph-import")
        self._client.call("GET", "/mailFolders/inbox" + query(select="id"), what=self._what)

    # -- folders -------------------------------------------------------------------------

    def open_folder(self, folder: TargetFolder) -> str:
        name = folder.display()
        if name in self._folders:
            return name
        parent = WELL_KNOWN.get(folder.special, ROOT) if folder.special else ROOT
        subpath = folder.subpath
        if folder.special is not None and folder.special not in WELL_KNOWN:
            subpath = (folder.special.value, *subpath)  # no mail folder of Graph's own
        what = f"{self._what}, folder {name!r}"
        current = self._client.call("GET", f"/mailFolders/{parent}" + query(select="id"),
                                    what=what)["id"]  # fmt: skip
        for part in subpath:
            current = self._child(current, part, what)
        self._folders[name] = current
        return name

    def _child(self, parent: str, name: str, what: str) -> str:
        found = self._find_child(parent, name, what)
        if found is not None:
            return found
        answer = self._client.request(
            "POST", f"/mailFolders/{parent}/childFolders", body={"displayName": name}, what=what
        )
        if answer.ok:
            return str(answer.body["id"])
        error = graph_error(answer, what)
        if isinstance(error, FolderRefused) and error.code is ErrorCode.ALREADYEXISTS:
            again = self._find_child(parent, name, what)  # made by another pass meanwhile
            if again is not None:
                return again
        if type(error) is PermanentError:
            raise FolderRefused(str(error), code=error.code)  # only this folder fails
        raise error

    def _find_child(self, parent: str, name: str, what: str) -> str | None:
        literal = name.replace("'", "''")  # OData: a quote in a literal is doubled
        path = f"/mailFolders/{parent}/childFolders" + query(
            filter=f"displayName eq '{literal}'", select="id,displayName"
        )
        wanted = name.casefold()
        for child in self._client.pages(path, what=what):
            if str(child.get("displayName", "")).casefold() == wanted:
                return str(child["id"])
        return None

    # -- index and quota -----------------------------------------------------------------

    def index(self, name: str) -> list[TargetCopy]:
        """The folder's messages, each with the content key and digest it was made from;
        one without the property (another route put it there, or its PATCH never came)
        is read whole once, and recognised by its MIME."""
        what = f"{self._what}, folder {name!r}"
        path = f"/mailFolders/{self._folders[name]}/messages" + query(
            select=_SELECT, expand=expand_properties(SOURCE_KEY), top=str(INDEX_PAGE)
        )
        copies = []
        for item in self._client.pages(path, what=what):
            extended = item.get("singleValueExtendedProperties") or []
            props = {p.get("id"): p.get("value") for p in extended}
            stored = load_key(props.get(SOURCE_KEY))
            if stored is None:
                stored = self._read_key(str(item["id"]), what)
            flags = {"\\seen"} if item.get("isRead") else set()
            if (item.get("flag") or {}).get("flagStatus") == "flagged":
                flags.add("\\flagged")
            if item.get("isDraft"):
                flags.add("\\draft")
            copies.append(
                TargetCopy(
                    id=str(item["id"]),
                    key=stored[0] if stored else None,
                    flags=frozenset(flags),
                    date=epoch_seconds(parse_time(item.get("receivedDateTime"))),
                    digest=stored[1] if stored else None,
                )
            )
        return copies

    def _read_key(self, message_id: str, what: str) -> tuple[str, str] | None:
        mime = self._client.call("GET", f"/messages/{message_id}/$value", what=what)
        if not isinstance(mime, bytes):
            return None
        key = content_key(mime, complete=True)
        return (key, message_digest(mime)) if key else None

    def digests(self, name: str, copies: Sequence[TargetCopy]) -> dict[str, str]:
        return {c.id: c.digest for c in copies if c.digest is not None}

    def quota(self) -> QuotaInfo:
        # Graph does not say a mailbox's quota: ErrorQuotaExceeded (or the CSV's) stops.
        return UNKNOWN_QUOTA

    # -- writing -------------------------------------------------------------------------

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        """Make each item (four at once), then settle the stored ones in one $batch.  A
        full mailbox stops at the first item it refuses: later ones that a parallel import
        did store are deleted again, so the mailbox keeps exactly the newest mail."""
        futures = [self._pool.submit(self._create, item) for item in items]
        outcomes: list[Outcome] = []
        created: list[dict[str, Any] | None] = []
        settle: list[bool] = []
        failure: tuple[int, MigrationError] | None = None
        for n, future in enumerate(futures):
            try:
                made, pending = future.result()
                created.append(made)
                settle.append(pending)
                outcomes.append(None)
            except (MessageRefused, QuotaExceeded) as exc:
                created.append(None)
                settle.append(False)
                outcomes.append(exc)
            except MigrationError as exc:
                created.append(None)
                settle.append(False)
                outcomes.append(None)
                failure = failure or (n, exc)
        stop = next((n for n, o in enumerate(outcomes) if isinstance(o, QuotaExceeded)), None)
        if stop is not None:
            # Later (older) ones made side by side: taken back, so nothing older than a
            # message the mailbox refused stays in it.
            for n in range(stop + 1, len(items)):
                stored = created[n]
                if stored is not None:
                    self._delete(str(stored["id"]))
                created[n], settle[n], outcomes[n] = None, False, outcomes[stop]
            if failure is None:  # else one may have landed unseen: the next pass looks
                self._one_by_one(items, stop, outcomes, created, settle)
        self._settle([(items[n], c) for n, c in enumerate(created) if c is not None and settle[n]])
        self.throttled_seconds = self._client.throttled_seconds
        if failure is not None:
            raise failure[1]  # what was stored is recognised by the next pass's index
        return outcomes

    def _one_by_one(
        self,
        items: Sequence[AppendItem],
        stop: int,
        outcomes: list[Outcome],
        created: list[dict[str, Any] | None],
        settle: list[bool],
    ) -> None:
        """The mailbox refused item `stop` as full, perhaps only because later ones made
        side by side (since taken back) had landed first: go on one at a time from
        `stop`, so what is kept is exactly the newest mail that fits."""
        for n in range(stop, len(items)):
            try:
                created[n], settle[n] = self._create(items[n])
                outcomes[n] = None
            except MessageRefused as exc:
                outcomes[n] = exc
            except QuotaExceeded as exc:
                outcomes[n:] = [exc] * (len(items) - n)
                return

    def _create(self, item: AppendItem) -> tuple[dict[str, Any], bool]:
        """The message made; (Graph's answer, whether it still needs its PATCH).  Graph
        refusing this one message (a 400 for MIME it cannot convert, ...) skips it alone."""
        try:
            return self._make(item)
        except PermanentError as exc:
            if type(exc) is not PermanentError or exc.code is ErrorCode.NONEXISTENT:
                raise  # about the mailbox or the folder, or a refusal already
            raise MessageRefused(str(exc), code=exc.code) from None

    def _make(self, item: AppendItem) -> tuple[dict[str, Any], bool]:
        what = f"{self._what}, folder {item.folder!r}"
        folder = self._folders[item.folder]
        if self._v1:
            from migrator.connectors.graph.jsoncreate import create_message

            return create_message(self._client, folder, item, what)
        data = base64.b64encode(item.message)
        self._client.reserve(len(data))
        answer = self._client.request(
            "POST", f"/mailFolders/{folder}/importMime", data=data,
            headers={"Content-Type": "text/plain"}, version="beta", what=what,
        )  # fmt: skip
        if answer.status == 403:
            raise MailboxNotReady(
                f"{graph_error(answer, what)}; importMime needs the application permission "
                "Mail-Advanced.ReadWrite.All, with admin consent (or --graph-api v1.0)"
            )
        if not answer.ok:
            raise graph_error(answer, what)
        made: dict[str, Any] = answer.body
        return made, True

    def _settle(self, stored: Sequence[tuple[AppendItem, dict[str, Any]]]) -> None:
        """Read state, flag, categories, the source key and the received time, as PATCHes
        in $batch requests of up to 20."""
        requests = [
            {"method": "PATCH", "url": f"/messages/{made['id']}", "body": patch(item, made)}
            for item, made in stored
        ]
        for start in range(0, len(requests), MAX_BATCH):
            chunk = requests[start : start + MAX_BATCH]
            for request, answer in zip(
                chunk, self._client.batch(chunk, what=self._what), strict=True
            ):
                if not answer.ok:
                    error = graph_error(answer, f"{self._what}, {request['url']}")
                    if not isinstance(error, PermanentError):
                        raise error
                    log.warning("%s (its read state, flag and source key are not set)", error)

    def _delete(self, message_id: str) -> None:
        self._client.call("POST", f"/messages/{message_id}/permanentDelete", what=self._what)

    def session(self) -> None:
        # One sequence of batches per mailbox; the parallelism is inside a batch (at most
        # four requests in flight per mailbox, Graph's limit).
        return None

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._client.close()
        self._folders.clear()


def patch(item: AppendItem, made: dict[str, Any]) -> dict[str, Any]:
    """The PATCH that settles an imported message."""
    lowered = {f.lower() for f in item.flags}
    body: dict[str, Any] = {"isRead": "\\seen" in lowered}
    if "\\flagged" in lowered:
        body["flag"] = {"flagStatus": "flagged"}
    # A Gmail label's keyword (gmail.label_keyword) as the label's own name.
    keywords = [keyword_label(f) for f in item.flags if not f.startswith("\\")]
    if keywords:
        body["categories"] = keywords
    props = []
    if item.key is not None:
        props.append({"id": SOURCE_KEY, "value": dump_key(item.key, message_digest(item.message))})
    received = parse_time(made.get("receivedDateTime"))
    wanted = item.internaldate
    if wanted is not None and epoch_seconds(received) != epoch_seconds(wanted):
        # importMime dated it from the MIME, which need not hold the source's arrival.
        props.append({"id": DELIVERY_TIME, "value": graph_time(wanted)})
    if props:
        body["singleValueExtendedProperties"] = props
    return body

"""Incremental listing of a Graph source folder: the first pass lists the folder whole
and takes a delta link (`messages/delta`); each later pass in the same worker process
asks that link what changed, and reads again only the messages it names.  The link is
also the folder's `FolderState.sync` (GraphSource.listed_state), so an incremental pass
in any process asks it what changed (`since`); one the server refuses (410 Gone,
syncStateNotFound: it forgot the state) is None, and the folder is listed whole."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrator.connectors.graph.client import MAX_BATCH, GraphClient, graph_error
from migrator.plan import MessageRef

# A delta round's pages hold 10 messages unless the request prefers more: a folder of
# 100,000 would take 10,000 requests to enumerate.  Asked with every page of a round;
# the environment may name fewer (the tests page with a few).
DELTA_PAGE_ENV = "MIGRATOR_GRAPH_DELTA_PAGE"
DELTA_PAGE = 1000
KEEP = 64  # folders whose listing a process keeps (the least recently listed go first)


@dataclass(frozen=True)
class Delta:
    """One round of a delta link: the messages created or changed (as listed), the ids
    removed, and the link for the next round."""

    refs: list[MessageRef]
    removed: frozenset[str]
    link: str = field(repr=False)


@dataclass
class _Listing:
    link: str  # the @odata.deltaLink of the last round
    refs: dict[str, MessageRef] = field(default_factory=dict)  # by message id


_kept: OrderedDict[tuple[str, str, str], _Listing] = OrderedDict()
_lock = threading.Lock()


class DeltaLister:
    """Lists one mailbox's folders, each from its kept listing and delta link where the
    process has them."""

    def __init__(
        self,
        client: GraphClient,
        url_of: Callable[[str], str],
    ) -> None:
        self._client = client
        self._url_of = url_of  # message id -> the GET of its listing (fields and size)
        self.delta_rounds = 0  # later passes answered by a delta link (tests read it)

    def listing(
        self,
        folder_id: str,
        full: Callable[[], list[MessageRef]],
        to_ref: Callable[[dict[str, Any]], MessageRef],
        what: str,
    ) -> list[MessageRef]:
        """The folder's messages: `full()` the first time, else the kept listing with
        what the delta link names read again (`to_ref` of each)."""
        key = (self._client.settings.url, self._client.mailbox.lower(), folder_id)
        with _lock:
            kept = _kept.get(key)
        if kept is None:
            # The link first: what changes while the folder is listed shows next round.
            link = self._link(folder_id, what)
            kept = _Listing(link, {r.uid: r for r in full()})
        else:
            self._apply(kept, to_ref, what)
            self.delta_rounds += 1
        with _lock:
            _kept[key] = kept
            _kept.move_to_end(key)
            while len(_kept) > KEEP:
                _kept.popitem(last=False)
        return list(kept.refs.values())

    def kept_link(self, folder_id: str) -> str | None:
        """The delta link this process holds for the folder (its last listing's)."""
        key = (self._client.settings.url, self._client.mailbox.lower(), folder_id)
        with _lock:
            kept = _kept.get(key)
        return kept.link if kept is not None else None

    def since(
        self, link: str, to_ref: Callable[[dict[str, Any]], MessageRef], what: str
    ) -> Delta | None:
        """What changed since `link` (a link saved by another pass, maybe in another
        process): the messages created or changed, read again, and the ids removed; None
        where the server no longer knows the link."""
        answer = self._client.request("GET", "", url=link, what=what, headers=_prefer())
        if answer.status == 410:
            return None  # Gone: syncStateNotFound (or resyncRequired)
        if not answer.ok:
            raise graph_error(answer, what)
        changed, removed, link = self._round(answer.body, what)
        refs = [to_ref(item) for item in self._read_all(changed, what)]
        self.delta_rounds += 1
        return Delta(refs, frozenset(removed), link)

    def _link(self, folder_id: str, what: str) -> str:
        body = self._client.call(
            "GET",
            f"/mailFolders/{folder_id}/messages/delta?$select=id",
            what=what,
            headers=_prefer(),
        )
        while "@odata.nextLink" in body:
            body = self._next(body, what)
        return str(body["@odata.deltaLink"])

    def _next(self, body: dict[str, Any], what: str) -> Any:
        return self._client.call(
            "GET", "", url=str(body["@odata.nextLink"]), what=what, headers=_prefer()
        )

    def _apply(
        self, kept: _Listing, to_ref: Callable[[dict[str, Any]], MessageRef], what: str
    ) -> None:
        body = self._client.call("GET", "", url=kept.link, what=what, headers=_prefer())
        changed, removed, kept.link = self._round(body, what)
        for ident in removed:
            kept.refs.pop(ident, None)
        for item in self._read_all(changed, what):
            ref = to_ref(item)
            kept.refs[ref.uid] = ref

    def _round(self, body: dict[str, Any], what: str) -> tuple[list[str], list[str], str]:
        """The ids changed and removed in one round of delta pages from its first page's
        `body`, and the round's @odata.deltaLink."""
        changed: list[str] = []
        removed: list[str] = []
        while True:
            for item in body.get("value", []):
                (removed if "@removed" in item else changed).append(str(item["id"]))
            if "@odata.nextLink" not in body:
                break
            body = self._next(body, what)
        gone = set(removed)
        return [i for i in changed if i not in gone], removed, str(body["@odata.deltaLink"])

    def _read_all(self, ids: Sequence[str], what: str) -> list[dict[str, Any]]:
        found = []
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]
            requests = [{"method": "GET", "url": self._url_of(i)} for i in chunk]
            for answer in self._client.batch(requests, what=what):
                if answer.ok and isinstance(answer.body, dict):
                    found.append(answer.body)  # one deleted meanwhile: gone next round
        return found


def _prefer() -> dict[str, str]:
    try:
        page = int(os.environ.get(DELTA_PAGE_ENV, "") or DELTA_PAGE)
    except ValueError:
        page = DELTA_PAGE
    return {"Prefer": f"odata.maxpagesize={max(1, min(page, DELTA_PAGE))}"}

"""Incremental listing of a Graph source folder: the first pass lists the folder whole
and takes a delta link (`messages/delta`); each later pass in the same worker process
asks that link what changed, and reads again only the messages it names."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrator.connectors.graph.client import MAX_BATCH, GraphClient
from migrator.plan import MessageRef

KEEP = 64  # folders whose listing a process keeps (the least recently listed go first)


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

    def _link(self, folder_id: str, what: str) -> str:
        body = self._client.call(
            "GET", f"/mailFolders/{folder_id}/messages/delta?$select=id", what=what
        )
        while "@odata.nextLink" in body:
            body = self._client.call("GET", "", url=str(body["@odata.nextLink"]), what=what)
        return str(body["@odata.deltaLink"])

    def _apply(
        self, kept: _Listing, to_ref: Callable[[dict[str, Any]], MessageRef], what: str
    ) -> None:
        changed: list[str] = []
        body = self._client.call("GET", "", url=kept.link, what=what)
        while True:
            for item in body.get("value", []):
                if "@removed" in item:
                    kept.refs.pop(str(item["id"]), None)
                else:
                    changed.append(str(item["id"]))
            if "@odata.nextLink" not in body:
                break
            body = self._client.call("GET", "", url=str(body["@odata.nextLink"]), what=what)
        kept.link = str(body["@odata.deltaLink"])
        for item in self._read_all(changed, what):
            ref = to_ref(item)
            kept.refs[ref.uid] = ref

    def _read_all(self, ids: Sequence[str], what: str) -> list[dict[str, Any]]:
        found = []
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start : start + MAX_BATCH]
            requests = [{"method": "GET", "url": self._url_of(i)} for i in chunk]
            for answer in self._client.batch(requests, what=what):
                if answer.ok and isinstance(answer.body, dict):
                    found.append(answer.body)  # one deleted meanwhile: gone next round
        return found

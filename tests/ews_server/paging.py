"""IndexedPageItemView / IndexedPageFolderView paging, shared by FindItem and FindFolder."""

from __future__ import annotations

from typing import TypeVar

from lxml import etree

from .soap import M, local, m

X = TypeVar("X")
VIEWS = ("IndexedPageItemView", "IndexedPageFolderView")


def page(request: etree._Element, rows: list[X]) -> tuple[list[X], etree._Element]:
    """The rows the request's view selects, and an empty ``m:RootFolder`` with the paging
    attributes exchangelib reads: IndexedPagingOffset, TotalItemsInView, IncludesLastItemInRange."""
    view = next((c for c in request if isinstance(c.tag, str) and local(c) in VIEWS), None)
    offset, limit = 0, len(rows)
    if view is not None:
        offset = int(view.get("Offset", "0"))
        if view.get("BasePoint", "Beginning") == "End":
            offset = max(0, len(rows) - offset - int(view.get("MaxEntriesReturned", len(rows))))
        limit = int(view.get("MaxEntriesReturned", str(len(rows))))
    chosen = rows[offset : offset + limit]
    end = offset + len(chosen)
    root = m("RootFolder")
    root.set("IndexedPagingOffset", str(end))
    root.set("TotalItemsInView", str(len(rows)))
    root.set("IncludesLastItemInRange", "true" if end >= len(rows) else "false")
    return chosen, root


def child(request: etree._Element, name: str) -> etree._Element | None:
    return request.find(f"{{{M}}}{name}")

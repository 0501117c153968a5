"""FindItem Restriction and SortOrder over the few fields migrations filter and sort by."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from lxml import etree

from .context import OpError
from .soap import T, local
from .store import Item

FIELDS: dict[str, Callable[[Item], Any]] = {
    "item:DateTimeReceived": lambda i: i.received,
    "item:DateTimeCreated": lambda i: i.received,
    "item:Size": lambda i: i.size,
    "item:Subject": lambda i: i.subject or "",
    "item:ItemClass": lambda i: i.item_class,
    "message:IsRead": lambda i: i.is_read,
    "message:InternetMessageId": lambda i: i.internet_message_id or "",
}
COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "IsEqualTo": lambda a, b: a == b,
    "IsNotEqualTo": lambda a, b: a != b,
    "IsGreaterThan": lambda a, b: a > b,
    "IsGreaterThanOrEqualTo": lambda a, b: a >= b,
    "IsLessThan": lambda a, b: a < b,
    "IsLessThanOrEqualTo": lambda a, b: a <= b,
}


def _field(uri: str) -> Callable[[Item], Any]:
    try:
        return FIELDS[uri]
    except KeyError:
        raise OpError(
            "ErrorUnsupportedPathForQuery", f"{uri} is not supported by this test server."
        ) from None


def _constant(sample: Any, text: str) -> Any:
    if isinstance(sample, bool):
        return text.strip().lower() == "true"
    if isinstance(sample, int):
        return int(text)
    if isinstance(sample, datetime):
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return text


def matches(restriction: etree._Element, item: Item) -> bool:
    """Whether ``item`` passes an m:Restriction (or any search expression inside one)."""
    kids = [c for c in restriction if isinstance(c.tag, str)]
    name = local(restriction)
    if name == "Restriction":
        return all(matches(c, item) for c in kids)
    if name == "And":
        return all(matches(c, item) for c in kids)
    if name == "Or":
        return any(matches(c, item) for c in kids)
    if name == "Not":
        return not matches(kids[0], item)
    if name == "Exists":
        return True
    if name in COMPARE:
        value = _field(kids[0].get("FieldURI", ""))(item)
        const = restriction.find(f"{{{T}}}FieldURIOrConstant/{{{T}}}Constant")
        if const is None:
            raise OpError("ErrorUnsupportedQueryFilter", "Only constants are supported.")
        return COMPARE[name](value, _constant(value, const.get("Value", "")))
    raise OpError("ErrorUnsupportedQueryFilter", f"{name} is not supported by this test server.")


def sort_items(items: list[Item], sort_order: etree._Element | None) -> list[Item]:
    """Newest first unless a SortOrder says otherwise (last FieldOrder is the least significant)."""
    result = sorted(items, key=lambda i: i.received, reverse=True)
    orders = [o for o in (sort_order if sort_order is not None else ()) if isinstance(o.tag, str)]
    for order in reversed(orders):
        uri = order.find(f"{{{T}}}FieldURI")
        key = _field(uri.get("FieldURI", "") if uri is not None else "")
        result.sort(key=key, reverse=order.get("Order") == "Descending")
    return result

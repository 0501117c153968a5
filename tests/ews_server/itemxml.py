"""Items <-> XML: reading a t:Message / t:CalendarItem / t:Contact from CreateItem, and answering
with the properties an ItemShape asks for, in schema order."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from lxml import etree

from .context import OpError
from .soap import T, bool_text, local, t
from .store import Item, Mailbox, new_id

# Element -> (default ItemClass, schema type, default folder for CreateItem without a folder)
ITEM_KINDS = {
    "Message": ("IPM.Note", "MessageType", "drafts"),
    "CalendarItem": ("IPM.Appointment", "CalendarItemType", "calendar"),
    "Contact": ("IPM.Contact", "ContactItemType", "contacts"),
    "Task": ("IPM.Task", "TaskType", "tasks"),
    "Item": ("IPM.Note", "ItemType", "drafts"),
}
CLASS_ELEMENTS = {"IPM.Appointment": "CalendarItem", "IPM.Contact": "Contact", "IPM.Task": "Task"}
# Kept apart from the generic ``props`` because the server computes or owns them.
COMPUTED = {
    "MimeContent",
    "ItemId",
    "ParentFolderId",
    "ItemClass",
    "IsRead",
    "ExtendedProperty",
    "Size",
}
PR_MESSAGE_DELIVERY_TIME = 0x0E06
# IndexedFieldURI names -> the element that holds every index of them
INDEXED = {
    "EmailAddress": "EmailAddresses",
    "PhoneNumber": "PhoneNumbers",
    "ImAddress": "ImAddresses",
    "PhysicalAddress": "PhysicalAddresses",
}


def extended_key(uri: etree._Element) -> tuple[tuple[str, str], ...]:
    """What identifies an extended property: its ExtendedFieldURI attributes except the type,
    with PropertyTag normalised (exchangelib writes ``0xe06``, others ``0x0E06``)."""
    attrs = {k: v for k, v in uri.attrib.items() if k != "PropertyType"}
    if "PropertyTag" in attrs:
        attrs["PropertyTag"] = hex(int(attrs["PropertyTag"], 0))
    return tuple(sorted(attrs.items()))


def item_from_element(box: Mailbox, folder_id: str, el: etree._Element) -> Item:
    """A new Item (not stored yet) from a CreateItem t:Message, t:CalendarItem, t:Contact..."""
    kind = local(el)
    item = Item(id=new_id("i", box.smtp), folder_id=folder_id, item_class=ITEM_KINDS[kind][0])
    for c in el:
        if not isinstance(c.tag, str):
            continue
        name = local(c)
        if name == "MimeContent":
            try:
                item.mime = base64.b64decode(c.text or "", validate=True)
            except binascii.Error:
                raise OpError(
                    "ErrorMimeContentConversionFailed", "MimeContent is not base64."
                ) from None
        elif name == "ItemClass":
            item.item_class = c.text or item.item_class
        elif name == "IsRead":
            item.is_read = (c.text or "").strip() in ("true", "1")
        elif name == "ExtendedProperty":
            uri = c.find(f"{{{T}}}ExtendedFieldURI")
            if uri is not None:
                item.extended[extended_key(uri)] = c
        elif name not in COMPUTED:
            item.props[name] = c
    delivery = item.extended.get((("PropertyTag", hex(PR_MESSAGE_DELIVERY_TIME)),))
    if delivery is not None:
        # Exchange's DateTimeReceived *is* PR_MESSAGE_DELIVERY_TIME: migrations set it so.
        item.received = _parse_dt(delivery.findtext(f"{{{T}}}Value") or "") or item.received
    return item


def _parse_dt(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def ews_datetime(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Shape:
    """An ItemShape: BaseShape, IncludeMimeContent and AdditionalProperties."""

    def __init__(self, shape: etree._Element | None) -> None:
        base = shape.findtext(f"{{{T}}}BaseShape") if shape is not None else "IdOnly"
        self.all = base in ("Default", "AllProperties")
        self.mime = shape is not None and shape.findtext(f"{{{T}}}IncludeMimeContent") == "true"
        self.fields: set[str] = set()
        self.extended: list[etree._Element] = []
        extra = shape.find(f"{{{T}}}AdditionalProperties") if shape is not None else None
        for p in extra if extra is not None else ():
            if not isinstance(p.tag, str):
                continue
            if local(p) == "ExtendedFieldURI":
                self.extended.append(p)
                continue
            name = (p.get("FieldURI") or "").split(":")[-1]
            self.fields.add(INDEXED.get(name, name))
        self.mime = self.mime or "MimeContent" in self.fields

    def wants(self, name: str) -> bool:
        return name == "ItemId" or name in self.fields or (self.all and name != "MimeContent")


def item_element(box: Mailbox, item: Item, shape: Shape, order: tuple[str, ...]) -> etree._Element:
    """The item as FindItem/GetItem answer it: only what ``shape`` asks for, in ``order``."""
    tag = CLASS_ELEMENTS.get(item.item_class, "Message")
    folder = box.folders[item.folder_id]
    values: dict[str, list[etree._Element]] = {}

    def put(name: str, el: etree._Element) -> None:
        if shape.wants(name) or (name == "MimeContent" and shape.mime):
            values.setdefault(name, []).append(el)

    if item.mime:
        put(
            "MimeContent",
            t("MimeContent", base64.b64encode(item.mime).decode(), CharacterSet="UTF-8"),
        )
    put("ItemId", t("ItemId", Id=item.id, ChangeKey=item.changekey))
    put("ParentFolderId", t("ParentFolderId", Id=folder.id, ChangeKey=folder.changekey))
    put("ItemClass", t("ItemClass", item.item_class))
    put("DateTimeReceived", t("DateTimeReceived", ews_datetime(item.received)))
    put("Size", t("Size", str(item.size)))
    put("DateTimeCreated", t("DateTimeCreated", ews_datetime(item.received)))
    if item.mime:
        if item.subject is not None:
            put("Subject", t("Subject", item.subject))
        if item.sent is not None:
            put("DateTimeSent", t("DateTimeSent", ews_datetime(item.sent)))
        if item.internet_message_id:
            put("InternetMessageId", t("InternetMessageId", item.internet_message_id))
    if tag == "Message":
        put("IsRead", t("IsRead", bool_text(item.is_read)))
    for name, el in item.props.items():
        put(name, el)
    asked = {extended_key(u) for u in shape.extended}
    for key, prop in item.extended.items():
        if key in asked:
            values.setdefault("ExtendedProperty", []).append(prop)
    out = t(tag)
    for name in order:
        for el in values.get(name, ()):
            out.append(_copy(el))
    return out


def _copy(el: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(el))


def export_blob(item: Item) -> str:
    """ExportItems Data: opaque to the client, here base64 of JSON holding the whole item."""
    doc = {
        "class": item.item_class,
        "mime": base64.b64encode(item.mime).decode(),
        "is_read": item.is_read,
        "received": item.received.isoformat(),
        "extended": [etree.tostring(e).decode() for e in item.extended.values()],
        "props": [etree.tostring(e).decode() for e in item.props.values()],
    }
    return base64.b64encode(json.dumps(doc).encode()).decode()


def import_blob(box: Mailbox, folder_id: str, data: str) -> Item:
    """The inverse of :func:`export_blob`, as a new item of ``box``."""
    try:
        doc = json.loads(base64.b64decode(data, validate=True))
    except (binascii.Error, ValueError):
        raise OpError(
            "ErrorInvalidOperation", "The Data is not an exported item of this server."
        ) from None
    item = Item(id=new_id("i", box.smtp), folder_id=folder_id, item_class=doc["class"])
    item.mime = base64.b64decode(doc["mime"])
    item.is_read = bool(doc["is_read"])
    item.received = datetime.fromisoformat(doc["received"])
    for text in doc["extended"]:
        prop = etree.fromstring(text)
        item.extended[extended_key(prop.find(f"{{{T}}}ExtendedFieldURI"))] = prop
    for text in doc["props"]:
        el = etree.fromstring(text)
        item.props[local(el)] = el
    return item

"""Item operations: CreateItem, FindItem, GetItem, UpdateItem (IsRead and extended
properties), DeleteItem, ExportItems, UploadItems."""

from __future__ import annotations

import copy

from lxml import etree

from .context import Context, OpError
from .itemxml import (
    CLASS_ELEMENTS,
    ITEM_KINDS,
    Shape,
    export_blob,
    extended_key,
    import_blob,
    item_element,
    item_from_element,
)
from .paging import child, page
from .restriction import matches, sort_items
from .soap import T, local, m, response, response_message, sub, t
from .store import Item, Mailbox


def _elements(container: etree._Element | None) -> list[etree._Element]:
    return [c for c in (container if container is not None else ()) if isinstance(c.tag, str)]


def _order(ctx: Context, item: Item) -> tuple[str, ...]:
    kind = CLASS_ELEMENTS.get(item.item_class, "Message")
    return ctx.server.schema.child_order(ITEM_KINDS[kind][1])


def _store(ctx: Context, box: Mailbox, item: Item) -> None:
    ctx.check_room(box, item.size)
    box.items[item.id] = item


def create_item(ctx: Context, req: etree._Element) -> etree._Element:
    """One response message per item: a batch stores the items before a quota error."""
    folder_ref = _elements(child(req, "SavedItemFolderId"))
    messages = []
    for spec in _elements(child(req, "Items")):
        kind = local(spec)
        try:
            if kind not in ITEM_KINDS:
                raise OpError(
                    "ErrorInvalidRequest", f"{kind} items are not supported by this test server."
                )
            if folder_ref:
                box, folder = ctx.folder(folder_ref[0])
            else:
                box = ctx.mailbox()
                folder = box.distinguished(ITEM_KINDS[kind][2])
            item = item_from_element(box, folder.id, spec)
            _store(ctx, box, item)
        except OpError as exc:
            msg = response_message("CreateItem", exc.code, exc.text)
            sub(msg, m("Items"))
            messages.append(msg)
            continue
        msg = response_message("CreateItem")
        sub(sub(msg, m("Items")), t(kind)).append(t("ItemId", Id=item.id, ChangeKey=item.changekey))
        messages.append(msg)
    return response("CreateItem", messages)


def find_item(ctx: Context, req: etree._Element) -> etree._Element:
    shape = Shape(child(req, "ItemShape"))
    if shape.mime:
        # As Exchange: FindItem never returns MimeContent.
        msg = response_message(
            "FindItem", "ErrorInvalidPropertyRequest", "MimeContent is not valid for FindItem."
        )
        return response("FindItem", [msg])
    restriction = child(req, "Restriction")
    messages = []
    for ref in _elements(child(req, "ParentFolderIds")):
        try:
            box, folder = ctx.folder(ref)
        except OpError as exc:
            messages.append(response_message("FindItem", exc.code, exc.text))
            continue
        found = [
            i for i in box.items_in(folder.id) if restriction is None or matches(restriction, i)
        ]
        chosen, root = page(req, sort_items(found, child(req, "SortOrder")))
        items = sub(root, t("Items"))
        for item in chosen:
            items.append(item_element(box, item, shape, _order(ctx, item)))
        msg = response_message("FindItem")
        msg.append(root)
        messages.append(msg)
    return response("FindItem", messages)


def get_item(ctx: Context, req: etree._Element) -> etree._Element:
    shape = Shape(child(req, "ItemShape"))
    messages = []
    for ref in _elements(child(req, "ItemIds")):
        try:
            box, item = ctx.item(ref)
        except OpError as exc:
            msg = response_message("GetItem", exc.code, exc.text)
            sub(msg, m("Items"))
            messages.append(msg)
            continue
        msg = response_message("GetItem")
        sub(msg, m("Items")).append(item_element(box, item, shape, _order(ctx, item)))
        messages.append(msg)
    return response("GetItem", messages)


def export_items(ctx: Context, req: etree._Element) -> etree._Element:
    messages = []
    for ref in _elements(child(req, "ItemIds")):
        try:
            _, item = ctx.item(ref)
        except OpError as exc:
            messages.append(response_message("ExportItems", exc.code, exc.text))
            continue
        msg = response_message("ExportItems")
        sub(msg, m("ItemId", Id=item.id, ChangeKey=item.changekey))
        sub(msg, m("Data", export_blob(item)))
        messages.append(msg)
    return response("ExportItems", messages)


def upload_items(ctx: Context, req: etree._Element) -> etree._Element:
    messages = []
    for spec in _elements(child(req, "Items")):
        try:
            parent = spec.find(f"{{{T}}}ParentFolderId")
            if parent is None:
                raise OpError("ErrorInvalidRequest", "ParentFolderId is required.")
            box, folder = ctx.folder(parent)
            item = import_blob(box, folder.id, spec.findtext(f"{{{T}}}Data") or "")
            target = spec.find(f"{{{T}}}ItemId")
            if spec.get("CreateAction") in ("Update", "UpdateOrCreate") and target is not None:
                if target.get("Id") in box.items:
                    del box.items[target.get("Id", "")]
                    item.id = target.get("Id", "")
                elif spec.get("CreateAction") == "Update":
                    raise OpError("ErrorItemNotFound", "The item to update was not found.")
            _store(ctx, box, item)
        except OpError as exc:
            messages.append(response_message("UploadItems", exc.code, exc.text))
            continue
        msg = response_message("UploadItems")
        sub(msg, m("ItemId", Id=item.id, ChangeKey=item.changekey))
        messages.append(msg)
    return response("UploadItems", messages)


# The item fields UpdateItem changes here (FieldURI), and how each is stored.
_UPDATABLE = {"message:IsRead": "IsRead"}


def update_item(ctx: Context, req: etree._Element) -> etree._Element:
    """SetItemField and DeleteItemField of message:IsRead, item:Categories and of extended
    properties (the flag status, our own properties), each change one response message;
    any other field is refused, as a property this server does not keep."""
    messages = []
    for change in _elements(child(req, "ItemChanges")):
        refs = [e for e in _elements(change) if local(e) == "ItemId"]
        try:
            if not refs:
                raise OpError("ErrorInvalidRequest", "ItemChange needs an ItemId here.")
            _, item = ctx.item(refs[0])
            for update in _elements(change.find(f"{{{T}}}Updates")):
                _update(item, update)
            item.changekey = f"CK{int(item.changekey[2:] or 1) + 1}"
        except OpError as exc:
            msg = response_message("UpdateItem", exc.code, exc.text)
            sub(msg, m("Items"))
            messages.append(msg)
            continue
        msg = response_message("UpdateItem")
        kind = CLASS_ELEMENTS.get(item.item_class, "Message")
        sub(sub(msg, m("Items")), t(kind)).append(t("ItemId", Id=item.id, ChangeKey=item.changekey))
        sub(msg, m("ConflictResults")).append(t("Count", "0"))
        messages.append(msg)
    return response("UpdateItem", messages)


def _update(item: Item, update: etree._Element) -> None:
    fields = [e for e in _elements(update) if local(e) in ("FieldURI", "ExtendedFieldURI")]
    if len(fields) != 1:
        raise OpError("ErrorInvalidRequest", "One field per update.")
    uri, op = fields[0], local(update)
    if local(uri) == "ExtendedFieldURI":
        key = extended_key(uri)
        if op == "DeleteItemField":
            item.extended.pop(key, None)
            return
        holder = next((e for e in _elements(update) if e is not uri), None)
        prop = holder.find(f"{{{T}}}ExtendedProperty") if holder is not None else None
        if prop is None:
            raise OpError("ErrorInvalidRequest", "SetItemField without the property.")
        item.extended[key] = prop
        return
    if uri.get("FieldURI") == "item:Categories" and op != "AppendToItemField":
        categories = update.find(f".//{{{T}}}Categories")
        if op == "DeleteItemField" or categories is None:
            item.props.pop("Categories", None)
        else:
            item.props["Categories"] = copy.deepcopy(categories)
        return
    name = _UPDATABLE.get(uri.get("FieldURI", ""))
    if name is None or op == "AppendToItemField":
        raise OpError(
            "ErrorInvalidPropertyRequest", f"{uri.get('FieldURI')} cannot be updated here."
        )
    if op == "DeleteItemField":
        item.is_read = False
        return
    value = update.findtext(f".//{{{T}}}{name}")
    item.is_read = value in ("true", "1")  # xs:boolean


def delete_item(ctx: Context, req: etree._Element) -> etree._Element:
    messages = []
    for ref in _elements(child(req, "ItemIds")):
        try:
            box, item = ctx.item(ref)
        except OpError as exc:
            messages.append(response_message("DeleteItem", exc.code, exc.text))
            continue
        del box.items[item.id]
        messages.append(response_message("DeleteItem"))
    return response("DeleteItem", messages)


OPERATIONS = {
    "CreateItem": create_item,
    "UpdateItem": update_item,
    "DeleteItem": delete_item,
    "FindItem": find_item,
    "GetItem": get_item,
    "ExportItems": export_items,
    "UploadItems": upload_items,
}

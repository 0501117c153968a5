"""Folder operations: GetFolder, FindFolder, CreateFolder, SyncFolderHierarchy."""

from __future__ import annotations

from lxml import etree

from .context import Context, OpError
from .paging import child, page
from .soap import T, local, m, response, response_message, sub, t
from .store import Folder, Mailbox, new_id

# FolderClass -> the element EWS answers with (exchangelib picks its folder class from it)
FOLDER_ELEMENTS = {
    "IPF.Appointment": ("CalendarFolder", "CalendarFolderType"),
    "IPF.Contact": ("ContactsFolder", "ContactsFolderType"),
    "IPF.Task": ("TasksFolder", "TasksFolderType"),
}


def folder_element(ctx: Context, box: Mailbox, folder: Folder) -> etree._Element:
    """All the folder properties we keep, in schema order (we answer AllProperties always)."""
    tag, type_name = FOLDER_ELEMENTS.get(folder.folder_class or "", ("Folder", "FolderType"))
    props: dict[str, etree._Element] = {
        "FolderId": t("FolderId", Id=folder.id, ChangeKey=folder.changekey),
        "DisplayName": t("DisplayName", folder.name),
        "TotalCount": t("TotalCount", str(len(box.items_in(folder.id)))),
        "ChildFolderCount": t("ChildFolderCount", str(len(box.children(folder.id)))),
        "UnreadCount": t("UnreadCount", str(sum(not i.is_read for i in box.items_in(folder.id)))),
    }
    if folder.parent_id:
        parent = box.folders[folder.parent_id]
        props["ParentFolderId"] = t("ParentFolderId", Id=parent.id, ChangeKey=parent.changekey)
    if folder.folder_class:
        props["FolderClass"] = t("FolderClass", folder.folder_class)
    if folder.distinguished:
        props["DistinguishedFolderId"] = t("DistinguishedFolderId", folder.distinguished)
    el = t(tag)
    for name in ctx.server.schema.child_order(type_name):
        if name in props:
            el.append(props[name])
    return el


def _folder_refs(container: etree._Element | None) -> list[etree._Element]:
    return [c for c in (container if container is not None else ()) if isinstance(c.tag, str)]


def get_folder(ctx: Context, req: etree._Element) -> etree._Element:
    messages = []
    for ref in _folder_refs(child(req, "FolderIds")):
        try:
            box, folder = ctx.folder(ref)
        except OpError as exc:
            messages.append(response_message("GetFolder", exc.code, exc.text))
            continue
        msg = response_message("GetFolder")
        sub(msg, m("Folders")).append(folder_element(ctx, box, folder))
        messages.append(msg)
    return response("GetFolder", messages)


def find_folder(ctx: Context, req: etree._Element) -> etree._Element:
    deep = req.get("Traversal") == "Deep"
    messages = []
    for ref in _folder_refs(child(req, "ParentFolderIds")):
        try:
            box, parent = ctx.folder(ref)
        except OpError as exc:
            messages.append(response_message("FindFolder", exc.code, exc.text))
            continue
        found = box.descendants(parent.id) if deep else box.children(parent.id)
        chosen, root = page(req, found)
        folders = sub(root, t("Folders"))
        for f in chosen:
            folders.append(folder_element(ctx, box, f))
        msg = response_message("FindFolder")
        msg.append(root)
        messages.append(msg)
    return response("FindFolder", messages)


def create_folder(ctx: Context, req: etree._Element) -> etree._Element:
    parent_ref = _folder_refs(child(req, "ParentFolderId"))
    messages = []
    for spec in _folder_refs(child(req, "Folders")):
        try:
            if not parent_ref:
                raise OpError("ErrorInvalidRequest", "ParentFolderId is required.")
            box, parent = ctx.folder(parent_ref[0])
            name = spec.findtext(f"{{{T}}}DisplayName") or ""
            if any(f.name.lower() == name.lower() for f in box.children(parent.id)):
                raise OpError(
                    "ErrorFolderExists", "A folder with the specified name already exists."
                )
            folder_class = spec.findtext(f"{{{T}}}FolderClass") or _class_of(local(spec))
            fid = new_id("f", box.smtp)
            box.folders[fid] = Folder(fid, parent.id, name, folder_class)
        except OpError as exc:
            messages.append(response_message("CreateFolder", exc.code, exc.text))
            continue
        msg = response_message("CreateFolder")
        out = sub(sub(msg, m("Folders")), t(local(spec)))
        out.append(t("FolderId", Id=fid, ChangeKey=box.folders[fid].changekey))
        messages.append(msg)
    return response("CreateFolder", messages)


def _class_of(tag: str) -> str:
    return {
        "CalendarFolder": "IPF.Appointment",
        "ContactsFolder": "IPF.Contact",
        "TasksFolder": "IPF.Task",
    }.get(tag, "IPF.Note")


def sync_folder_hierarchy(ctx: Context, req: etree._Element) -> etree._Element:
    """Every folder is a Create on the first sync; later syncs (any SyncState) report no change."""
    ref = _folder_refs(child(req, "SyncFolderId"))
    try:
        box, top = (
            ctx.folder(ref[0]) if ref else (ctx.mailbox(), ctx.mailbox().distinguished("root"))
        )
    except OpError as exc:
        return response(
            "SyncFolderHierarchy", [response_message("SyncFolderHierarchy", exc.code, exc.text)]
        )
    first = not (child(req, "SyncState") is not None and child(req, "SyncState").text)
    msg = response_message("SyncFolderHierarchy")
    sub(msg, m("SyncState", f"{box.smtp}:{len(box.folders)}"))
    sub(msg, m("IncludesLastFolderInRange", "true"))
    changes = sub(msg, m("Changes"))
    for f in box.descendants(top.id) if first else []:
        sub(changes, t("Create")).append(folder_element(ctx, box, f))
    return response("SyncFolderHierarchy", [msg])


OPERATIONS = {
    "GetFolder": get_folder,
    "FindFolder": find_folder,
    "CreateFolder": create_folder,
    "SyncFolderHierarchy": sync_folder_hierarchy,
}

"""mailFolders: get one (by id or well-known name), list top-level and child folders
(with `$filter=displayName eq '...'`), create a child folder."""

from __future__ import annotations

from typing import Any

from .context import Call, GraphError, Reply, filter_eq
from .store import ROOT, Folder, Mailbox, new_id

PAGE = 10  # Graph's default page of folders


def folder_json(box: Mailbox, folder: Folder) -> dict[str, Any]:
    messages = box.in_folder(folder.id)
    return {
        "id": folder.id,
        "displayName": folder.name,
        "parentFolderId": folder.parent_id or "",
        "childFolderCount": len(box.children(folder.id)),
        "totalItemCount": len(messages),
        "unreadItemCount": sum(1 for m in messages if not m.is_read),
        "isHidden": False,
    }


def find_folder(call: Call, ref: str) -> Folder:
    folder = call.mailbox.folder(ref)
    if folder is None:
        raise GraphError(404, "ErrorItemNotFound", "The object was not found in the store.")
    return folder


def get_folder(call: Call, ref: str) -> Reply:
    return Reply(200, folder_json(call.mailbox, find_folder(call, ref)), type_name="mailFolder")


def list_folders(call: Call, parent: Folder, base: str) -> Reply:
    children = sorted(call.mailbox.children(parent.id), key=lambda f: f.id)
    if "$filter" in call.query:
        wanted = filter_eq(call.query["$filter"])
        if any(prop != "displayName" for prop, _ in wanted):
            raise GraphError(400, "ErrorInvalidProperty", "Only displayName may be filtered.")
        names = {value.lower() for _, value in wanted}
        children = [f for f in children if f.name.lower() in names]
    top = int(call.query.get("$top", PAGE))
    skip = int(call.query.get("$skip", 0))
    page = children[skip : skip + top]
    body: dict[str, Any] = {"value": [folder_json(call.mailbox, f) for f in page]}
    if skip + top < len(children):
        rest = {k: v for k, v in call.query.items() if k not in ("$skip",)}
        query = "&".join(f"{k}={v}" for k, v in {**rest, "$skip": str(skip + top)}.items())
        body["@odata.nextLink"] = f"{base}?{query}"
    return Reply(200, body, type_name="mailFolder", collection=True)


def create_folder(call: Call, parent: Folder) -> Reply:
    data = call.json if isinstance(call.json, dict) else {}
    name = data.get("displayName")
    if not isinstance(name, str) or not name.strip():
        raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
    box = call.mailbox
    if any(f.name.lower() == name.lower() for f in box.children(parent.id)):
        raise GraphError(
            409, "ErrorFolderExists", "A folder with the specified name already exists."
        )
    folder = Folder(new_id("F"), name, parent.id)
    box.folders[folder.id] = folder
    return Reply(201, folder_json(box, folder), type_name="mailFolder")


def folders(call: Call, base: str) -> Reply:
    """/mailFolders[/{id}[/childFolders]] (anything deeper is the messages' or rules')."""
    seg = call.segments
    if len(seg) == 1:
        root = find_folder(call, ROOT)
        if call.method == "POST":
            return create_folder(call, root)
        return list_folders(call, root, base)
    folder = find_folder(call, seg[1])
    if len(seg) == 2 and call.method == "GET":
        return get_folder(call, seg[1])
    if len(seg) == 3 and seg[2] == "childFolders":
        if call.method == "POST":
            return create_folder(call, folder)
        return list_folders(call, folder, base)
    raise GraphError(400, "BadRequest", f"Resource not found for the segment '{seg[-1]}'.")

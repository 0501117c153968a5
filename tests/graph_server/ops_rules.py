"""Inbox rules: /mailFolders/inbox/messageRules (list, create, get, delete)."""

from __future__ import annotations

from typing import Any

from .context import Call, GraphError, Reply
from .store import new_id


def rules(call: Call) -> Reply:
    seg = call.segments
    if seg[1].lower() != "inbox" and call.mailbox.folder(seg[1]) != call.mailbox.folder("inbox"):
        raise GraphError(400, "ErrorInvalidRequest", "Rules are kept on the Inbox only.")
    box = call.mailbox
    if len(seg) == 3 and call.method == "GET":
        ordered = sorted(box.rules.values(), key=lambda r: r.get("sequence", 0))
        return Reply(200, {"value": ordered}, type_name="messageRule", collection=True)
    if len(seg) == 3 and call.method == "POST":
        data: dict[str, Any] = dict(call.json) if isinstance(call.json, dict) else {}
        if not data.get("displayName"):
            raise GraphError(400, "ErrorInvalidRequest", "displayName is required.")
        rule = {
            **data,
            "id": new_id("R"),
            "isEnabled": data.get("isEnabled", True),
            "hasError": False,
            "isReadOnly": False,
            "sequence": data.get("sequence", len(box.rules) + 1),
        }
        box.rules[rule["id"]] = rule
        return Reply(201, rule, type_name="messageRule")
    if len(seg) == 4:
        rule = box.rules.get(seg[3])
        if rule is None:
            raise GraphError(404, "ErrorItemNotFound", "The specified object was not found.")
        if call.method == "GET":
            return Reply(200, rule, type_name="messageRule")
        if call.method == "DELETE":
            del box.rules[seg[3]]
            return Reply(204)
    raise GraphError(405, "BadRequest", f"{call.method} is not allowed here.")

"""Inbox rules over Microsoft Graph (/mailFolders/inbox/messageRules): the adapter behind
migrator.forwarding.InboxRules, for forwarding from a Graph source."""

from __future__ import annotations

import dataclasses

from migrator.connectors.graph.client import GraphClient
from migrator.connectors.graph.settings import GraphSettings, address_url
from migrator.forwarding import InboxRule
from migrator.model import MailboxJob

RULES = "/mailFolders/inbox/messageRules"


class GraphInboxRules:
    """The inbox rules of the source mailbox of `job`."""

    def __init__(self, job: MailboxJob, settings: GraphSettings) -> None:
        self._what = f"source mailbox {job.source_identity}: inbox rules"
        settings = dataclasses.replace(settings, url=address_url(job.source_server))
        self._client = GraphClient(settings, job.source_identity, None)

    def list_rules(self) -> list[InboxRule]:
        return [
            InboxRule(
                id=str(rule["id"]),
                display_name=str(rule.get("displayName") or ""),
                redirect_to=tuple(
                    str((r.get("emailAddress") or {}).get("address", ""))
                    for r in ((rule.get("actions") or {}).get("redirectTo") or [])
                ),
            )
            for rule in self._client.pages(RULES, what=self._what)
        ]

    def create_redirect(self, display_name: str, target: str) -> None:
        # Redirect keeps the message in the source Inbox (no delete action) and shows the
        # original sender at the target, which forwardTo would not.
        rule = {
            "displayName": display_name,
            "sequence": 1,
            "isEnabled": True,
            "actions": {
                "redirectTo": [{"emailAddress": {"address": target}}],
                "stopProcessingRules": False,
            },
        }
        self._client.call("POST", RULES, body=rule, what=self._what)

    def delete_rule(self, rule_id: str) -> None:
        self._client.call("DELETE", f"{RULES}/{rule_id}", what=self._what)

"""Exchange inbox rules over EWS (GetInboxRules, UpdateInboxRules): the adapter behind
migrator.forwarding.InboxRules, with exchangelib's errors translated."""

from __future__ import annotations

import dataclasses
from typing import Any

from exchangelib.properties import Actions, Address, Rule

from migrator.connectors.ews.account import ews_call, open_account
from migrator.connectors.ews.settings import EwsSettings, source_endpoint
from migrator.forwarding import InboxRule
from migrator.model import MailboxJob


class EwsInboxRules:
    """The inbox rules of the source mailbox of `job`."""

    def __init__(self, job: MailboxJob, settings: EwsSettings) -> None:
        self._what = f"source mailbox {job.source_identity}"
        if settings.endpoint is None:
            settings = dataclasses.replace(settings, endpoint=source_endpoint(job.source_server))
        self._account: Any = open_account(
            settings, job.source_identity, job.source_credentials, what=self._what
        )

    def list_rules(self) -> list[InboxRule]:
        rules = ews_call(f"{self._what}: inbox rules", lambda: list(self._account.rules))
        return [
            InboxRule(
                id=str(rule.id),
                display_name=str(rule.display_name or ""),
                redirect_to=tuple(
                    str(a.email_address)
                    for a in ((rule.actions.redirect_to_recipients if rule.actions else None) or [])
                ),
            )
            for rule in rules
        ]

    def create_redirect(self, display_name: str, target: str) -> None:
        # Redirect keeps the message in the source Inbox (no Delete action) and shows the
        # original sender at the target, which a forward would not.
        rule = Rule(
            account=self._account,
            display_name=display_name,
            priority=1,
            is_enabled=True,
            actions=Actions(redirect_to_recipients=[Address(email_address=target)]),
        )
        ews_call(f"{self._what}: create inbox rule", lambda: self._account.create_rule(rule))

    def delete_rule(self, rule_id: str) -> None:
        rule = Rule(account=self._account, id=rule_id, display_name="", priority=1)
        ews_call(f"{self._what}: delete inbox rule", lambda: self._account.delete_rule(rule))

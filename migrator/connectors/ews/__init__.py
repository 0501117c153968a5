"""Exchange Web Services: source and target, with calendar, contacts and tasks beside
the mail, and forwarding by an inbox rule.  exchangelib appears in this package only;
account.py is where its errors become migrator's."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, ClassVar

from migrator.connectors.base import BaseConnector, Role, Settings, SourceEnd, TargetEnd
from migrator.connectors.ews.settings import (
    EwsAuth,
    EwsSettings,
    add_ews_arguments,
    endpoint_address,
    source_settings,
    target_settings,
)
from migrator.errors import ConfigError
from migrator.forwarding import ForwardAction, ForwardOutcome, rule_remove, rule_set, rule_status
from migrator.model import ConnectOptions, ServerAddress, TlsMode
from migrator.report import MailboxResult, MailboxState
from migrator.sources.base import MailboxSource
from migrator.targets.base import MailboxTarget


class EwsConnector(BaseConnector):
    kind = "ews"
    protocol = "ews"
    # A bare host or https:// is /EWS/Exchange.asmx over TLS; http:// (tests) has no TLS
    # at all, and the adapters refuse it without --allow-plaintext.  STARTTLS stands for
    # that here: EWS has no upgrade.
    schemes: ClassVar[Mapping[str, tuple[TlsMode, int]]] = {
        "ews": (TlsMode.IMPLICIT, 443),
        "https": (TlsMode.IMPLICIT, 443),
        "http": (TlsMode.STARTTLS, 80),
    }
    roles = frozenset({Role.SOURCE, Role.TARGET})

    def add_arguments(self, parser: argparse.ArgumentParser, roles: frozenset[Role]) -> None:
        add_ews_arguments(parser, source=Role.SOURCE in roles, target=Role.TARGET in roles)

    def settings(
        self, args: argparse.Namespace, role: Role, connect: ConnectOptions
    ) -> Settings | None:
        if role is Role.TARGET:
            return target_settings(args, connect)
        return source_settings(args, connect)

    def settings_from_json(self, data: Mapping[str, Any], connect: ConnectOptions) -> Settings:
        return EwsSettings.from_json(data, connect)

    def target_server(self, settings: Settings | None) -> ServerAddress | None:
        return endpoint_address(_ews(settings).endpoint)

    def needs_password(self, settings: Settings | None) -> bool:
        return _ews(settings).auth is not EwsAuth.OAUTH  # OAuth: a client secret, no login

    def slot(self, settings: Settings | None) -> tuple[str, int] | None:
        ews = _ews(settings)
        return ews.slot_key(), ews.max_connections

    def open_source(self, end: SourceEnd) -> MailboxSource:
        from migrator.connectors.ews.source import EwsSource

        return EwsSource(end.job, _ews(end.settings))

    def open_target(self, end: TargetEnd) -> MailboxTarget:
        from migrator.connectors.ews.target import EwsTarget

        return EwsTarget(_ews(end.settings), end.credentials, end.identity)

    def after_copy(
        self, result: MailboxResult, source: SourceEnd, target: TargetEnd, target_kind: str
    ) -> MailboxResult:
        """Calendar, contacts and tasks, once the mail is all in: into an EWS target's
        default folders, or counted as skipped where the target cannot hold them."""
        if result.state is not MailboxState.DONE:
            return result
        from migrator.connectors.ews.source import EwsSource, copy_non_mail
        from migrator.connectors.ews.target import EwsTarget

        settings = _ews(source.settings)
        open_target = None
        if target_kind == self.kind:
            target_settings = _ews(target.settings)
            open_target = lambda: EwsTarget(target_settings, target.credentials, target.identity)  # noqa: E731
        return copy_non_mail(result, lambda: EwsSource(source.job, settings), open_target)

    def forward(self, action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
        from migrator.connectors.ews.rules import EwsInboxRules

        rules = EwsInboxRules(source.job, _ews(source.settings))
        if action is ForwardAction.SET:
            return rule_set(rules, source.job.target_identity)
        return rule_remove(rules) if action is ForwardAction.REMOVE else rule_status(rules)


def _ews(settings: Settings | None) -> EwsSettings:
    if not isinstance(settings, EwsSettings):
        raise ConfigError("an Exchange end needs its EWS settings in the job")
    return settings


CONNECTOR = EwsConnector()

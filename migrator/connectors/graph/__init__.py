"""Microsoft Graph: Exchange Online's mailboxes as a target (importMime, or JSON create
with --graph-api v1.0) and as a source, with app-only tokens from migrator.oauth's
Microsoft provider.  requests appears here for Graph's HTTP; client.py is where its
errors, and Graph's error answers, become migrator's."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, ClassVar

from migrator.connectors.base import BaseConnector, Role, Settings, SourceEnd, TargetEnd
from migrator.connectors.graph.settings import (
    GraphSettings,
    add_graph_arguments,
    graph_settings,
    url_address,
)
from migrator.errors import ConfigError
from migrator.forwarding import ForwardAction, ForwardOutcome, rule_remove, rule_set, rule_status
from migrator.model import ConnectOptions, ServerAddress, TlsMode
from migrator.sources.base import MailboxSource
from migrator.targets.base import MailboxTarget


class GraphConnector(BaseConnector):
    kind = "graph"
    protocol = "graph"
    # A Graph source row's SourceServer: https://graph.microsoft.com (or graph://host).
    schemes: ClassVar[Mapping[str, tuple[TlsMode, int]]] = {
        "https": (TlsMode.IMPLICIT, 443),
        "graph": (TlsMode.IMPLICIT, 443),
    }
    roles = frozenset({Role.SOURCE, Role.TARGET})
    needs_login = False  # the app's token reads every mailbox: no login or password per row

    def add_arguments(self, parser: argparse.ArgumentParser, roles: frozenset[Role]) -> None:
        # Every command that reads a batch asks for its sources' options first; one app
        # serves both ends.
        if Role.SOURCE in roles:
            add_graph_arguments(parser)

    def settings(
        self, args: argparse.Namespace, role: Role, connect: ConnectOptions
    ) -> Settings | None:
        url = args.target_server if role is Role.TARGET else None
        return graph_settings(args, connect, url)

    def settings_from_json(self, data: Mapping[str, Any], connect: ConnectOptions) -> Settings:
        return GraphSettings.from_json(data, connect)

    def target_server(self, settings: Settings | None) -> ServerAddress | None:
        return url_address(_graph(settings).url)

    def needs_password(self, settings: Settings | None) -> bool:
        return False  # the app's client secret or certificate only

    def open_target(self, end: TargetEnd) -> MailboxTarget:
        from migrator.connectors.graph.target import GraphTarget

        return GraphTarget(_graph(end.settings), end.identity, end.uploads)

    def open_source(self, end: SourceEnd) -> MailboxSource:
        from migrator.connectors.graph.source import GraphSource

        return GraphSource(end.job, _graph(end.settings))

    def forward(self, action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
        """An inbox messageRule redirecting to the target, the original kept; `remove`
        deletes ours only."""
        from migrator.connectors.graph.rules import GraphInboxRules

        rules = GraphInboxRules(source.job, _graph(source.settings))
        if action is ForwardAction.SET:
            return rule_set(rules, source.job.target_identity)
        return rule_remove(rules) if action is ForwardAction.REMOVE else rule_status(rules)


def _graph(settings: Settings | None) -> GraphSettings:
    if not isinstance(settings, GraphSettings):
        raise ConfigError("a Microsoft Graph end needs its Graph settings in the job")
    return settings


CONNECTOR = GraphConnector()

"""IMAP (RFC 3501, RFC 9051): source and target.  imapclient and imaplib appear in this
package only; connection.py is where their errors become migrator's."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from migrator.connectors.base import BaseConnector, Role, Settings, SourceEnd, TargetEnd
from migrator.foldermap import FolderMap
from migrator.forwarding import ForwardAction, ForwardOutcome
from migrator.gmail import GmailSettings
from migrator.model import ConnectOptions, MailboxJob, TlsMode
from migrator.sources.base import MailboxSource
from migrator.targets.base import MailboxTarget

if TYPE_CHECKING:  # velocity's own, imported by velocity commands only
    from migrator.velocity.plan import InventoryRow


class ImapConnector(BaseConnector):
    """IMAP; as `gmail` (`--source-type gmail`), a source that is Gmail even where the
    server does not say so.  An IMAP server that announces X-GM-EXT-1 is read as Gmail
    either way (connectors/imap/gmail.py)."""

    protocol = "imap"
    schemes: ClassVar[Mapping[str, tuple[TlsMode, int]]] = {
        "imap": (TlsMode.STARTTLS, 143),
        "imaps": (TlsMode.IMPLICIT, 993),
    }
    surveys = True
    gated_login = True  # connection.connect() holds the login

    def __init__(self, kind: str = "imap") -> None:
        self.kind = kind
        both = frozenset({Role.SOURCE, Role.TARGET})
        self.roles = both if kind == "imap" else frozenset({Role.SOURCE})

    def add_arguments(self, parser: argparse.ArgumentParser, roles: frozenset[Role]) -> None:
        from migrator.connectors.imap.gmailoptions import add_gmail_arguments

        add_gmail_arguments(parser, roles)

    def settings(
        self, args: argparse.Namespace, role: Role, connect: ConnectOptions
    ) -> Settings | None:
        from migrator.connectors.imap.gmailoptions import gmail_settings

        return gmail_settings(args, role, forced=self.kind == "gmail" and role is Role.SOURCE)

    def settings_from_json(self, data: Mapping[str, Any], connect: ConnectOptions) -> Settings:
        return GmailSettings.from_json(data)

    def open_source(self, end: SourceEnd) -> MailboxSource:
        from migrator.connectors.imap.gmailoptions import open_imap_source

        return open_imap_source(end)

    def open_target(self, end: TargetEnd) -> MailboxTarget:
        from migrator.connectors.imap.gmailoptions import open_imap_target

        return open_imap_target(end)

    def forward(self, action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
        from migrator.connectors.imap.forwarding import forward

        return forward(action, source)

    def survey(
        self,
        job: MailboxJob,
        connect: ConnectOptions,
        folder_map: FolderMap,
        *,
        quota: int | None = None,
        use_status_size: bool = True,
    ) -> InventoryRow:
        from migrator.connectors.imap.survey import survey_mailbox

        return survey_mailbox(
            job, connect, folder_map, quota=quota, use_status_size=use_status_size
        )

    def empty_target(self, end: TargetEnd) -> int:
        from migrator.connectors.imap.reset import empty_mailbox

        return empty_mailbox(end)


CONNECTOR = ImapConnector()
GMAIL = ImapConnector("gmail")

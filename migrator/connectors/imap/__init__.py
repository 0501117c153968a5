"""IMAP (RFC 3501, RFC 9051): source and target.  imapclient and imaplib appear in this
package only; connection.py is where their errors become migrator's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from migrator.connectors.base import BaseConnector, Role, SourceEnd, TargetEnd
from migrator.foldermap import FolderMap
from migrator.forwarding import ForwardAction, ForwardOutcome
from migrator.model import ConnectOptions, MailboxJob, TlsMode
from migrator.sources.base import MailboxSource
from migrator.targets.base import MailboxTarget
from migrator.velocity.plan import InventoryRow


class ImapConnector(BaseConnector):
    kind = "imap"
    protocol = "imap"
    schemes: ClassVar[Mapping[str, tuple[TlsMode, int]]] = {
        "imap": (TlsMode.STARTTLS, 143),
        "imaps": (TlsMode.IMPLICIT, 993),
    }
    roles = frozenset({Role.SOURCE, Role.TARGET})
    surveys = True

    def open_source(self, end: SourceEnd) -> MailboxSource:
        from migrator.connectors.imap.source import ImapSource

        return ImapSource(end.job, end.connect, fetch_window=end.fetch_window)

    def open_target(self, end: TargetEnd) -> MailboxTarget:
        from migrator.connectors.imap.target import ImapTarget

        return ImapTarget(end.server, end.credentials, end.identity, end.connect)

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

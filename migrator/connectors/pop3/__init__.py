"""POP3 (RFC 1939): a source only, everything into the Inbox.  poplib appears in this
package only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from migrator.connectors.base import BaseConnector, Role, SourceEnd
from migrator.forwarding import ForwardAction, ForwardOutcome, manual_outcome
from migrator.model import TlsMode
from migrator.sources.base import MailboxSource


class Pop3Connector(BaseConnector):
    kind = "pop"
    protocol = "pop3"
    # RFC 2595: a bare host means STLS on 110.
    schemes: ClassVar[Mapping[str, tuple[TlsMode, int]]] = {
        "pop3": (TlsMode.STARTTLS, 110),
        "pop3s": (TlsMode.IMPLICIT, 995),
    }
    roles = frozenset({Role.SOURCE})

    def open_source(self, end: SourceEnd) -> MailboxSource:
        from migrator.connectors.pop3.source import Pop3Source

        return Pop3Source(end.job, end.connect)

    def forward(self, action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
        return manual_outcome(action, source.job, "POP3 has no way to set forwarding")


CONNECTOR = Pop3Connector()

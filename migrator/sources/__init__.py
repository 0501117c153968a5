"""Source adapters: each reads one mailbox behind the `MailboxSource` protocol."""

from migrator.sources.base import MailboxSource, SourceFolder

__all__ = ["MailboxSource", "SourceFolder"]

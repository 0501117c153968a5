"""Target adapters: each writes one mailbox behind the `MailboxTarget` protocol."""

from migrator.targets.base import MailboxTarget, QuotaInfo

__all__ = ["MailboxTarget", "QuotaInfo"]

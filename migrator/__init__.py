"""migrator: copy mailboxes from IMAP (and later POP3, EWS) servers into IMAP or Exchange."""

__version__ = "0.1.0"

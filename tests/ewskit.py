"""Exchange mailboxes as the tests meet them on the test EWS server: a source seeded through
exchangelib as a client would fill it, and where the shipped folder map puts mail in an
Exchange target."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ews_server import EwsServer, ews_account
from exchangelib import CalendarItem, Contact, EWSDateTime, Folder, Message
from support import EWS_PASSWORD

from migrator.connectors.ews.props import register_properties

# Where the shipped folder map sends each source folder, as the test server names folders.
IMAP_TO_EWS_FOLDER = {
    "INBOX": ("inbox",),
    "Sent Messages": ("sentitems",),
    "Spam": ("junkemail",),
    "Projects/2024": ("msgfolderroot", "Projects", "2024"),
    "INBOX/Important": ("inbox", "Important"),
}

START = datetime(2023, 6, 1, 9, 0, tzinfo=UTC)
# A seeded folder (as EWS names it) -> where the folder map sends it in an Exchange target.
SEEDED_TO_EWS_FOLDER = {
    "inbox": ("inbox",),
    "sentitems": ("sentitems",),
    "Projects": ("inbox", "Projects"),
}


@dataclass(frozen=True)
class Seeded:
    folder: str  # "inbox", "sentitems" or "Projects" (under the Inbox)
    raw: bytes
    received: datetime
    is_read: bool
    flagged: bool


def raw_message(n: int) -> bytes:
    return (
        f"From: Person {n} <p{n}@example.org>\r\nTo: owner@example.com\r\n"
        f"Subject: Source message {n}\r\nMessage-ID: <src{n}.{n * 7}@example.org>\r\n"
        f"Date: Thu, 1 Jun 2023 09:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n\r\nBody {n}: {'é' * (n % 7)}\r\n"
    ).encode()


def seed(ews: EwsServer, smtp: str) -> list[Seeded]:
    """Mail in Inbox, Sent Items and Inbox/Projects, a meeting and a contact, made through
    exchangelib as a client would."""
    register_properties()
    account = ews_account(ews, smtp, password=EWS_PASSWORD)
    projects = Folder(parent=account.inbox, name="Projects")
    projects.save()
    folders = {"inbox": account.inbox, "sentitems": account.sent, "Projects": projects}
    seeded = []
    for n in range(36):
        name = ("inbox", "sentitems", "Projects")[n % 3]
        seeded.append(
            Seeded(name, raw_message(n), START + timedelta(hours=n), n % 4 != 0, n % 5 == 1)
        )
    for name, folder in folders.items():
        account.bulk_create(
            folder,
            [
                Message(
                    account=account,
                    folder=folder,
                    mime_content=s.raw,
                    is_read=s.is_read,
                    migrator_delivery_time=EWSDateTime.from_datetime(s.received),
                    migrator_flag_status=2 if s.flagged else None,
                )
                for s in seeded
                if s.folder == name
            ],
        )
    start = EWSDateTime.from_datetime(START)
    CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Cutover",
        start=start,
        end=start + timedelta(hours=1),
    ).save()
    Contact(
        account=account,
        folder=account.contacts,
        given_name="Bob",
        surname="Builder",
        display_name="Bob Builder",
    ).save()
    return seeded

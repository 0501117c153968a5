"""A Gmail-shaped mailbox in the test Dovecot, behind servers.gmail_proxy, and where each of
its messages must land.

Gmail shows one message in every folder of its labels and in `[Gmail]/All Mail`; an
archived message (no label left) shows in All Mail only; Spam and Trash hold messages no
other folder shows. `gmail_messages(n)` makes such an account's messages, deterministic
by index: single and multiple labels, nested labels, sent, starred and important mail,
archived mail, spam and trash. `fill_gmail` appends a copy of each to every folder that
shows it; `GmailProxy` (servers/gmail_proxy.py) then answers X-GM-MSGID and X-GM-LABELS.
"""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from imapclient import IMAPClient
from servers.dovecot import DovecotServer
from servers.dovecot_config import ALL_MAIL_FOLDER
from servers.gmail_proxy import GmailProxy
from servers.mailgen import make_message, message_flags, message_id
from support import default_map_target, digest, snapshot

INBOX = "INBOX"
SENT = "[Gmail]/Sent Mail"
STARRED = "[Gmail]/Starred"
IMPORTANT = "[Gmail]/Important"
SPAM = "[Gmail]/Spam"
TRASH = "[Gmail]/Trash"
SYSTEM = {INBOX, SENT, STARRED, IMPORTANT, SPAM, TRASH}

# The folders (labels) each message shows in besides All Mail, by index modulo 20.
_PATTERNS: tuple[tuple[str, ...], ...] = (
    (INBOX,),
    (INBOX, "Work"),  # two labels, one of them the Inbox
    ("Work", "Personal"),  # two user labels: the first by name order wins
    (SENT,),
    (),  # archived: All Mail only
    ("Personal", STARRED, IMPORTANT),
    (INBOX, STARRED),
    ("Projects/2024", "Work", IMPORTANT),  # a nested label
    (SENT, INBOX),  # sent to oneself
    (),
    ("Zürich",),  # a label that is not ASCII
    (INBOX, "Personal", "Work"),
    (SENT, "Work"),
    ("Work",),
    (IMPORTANT,),  # Important alone: archived as far as folders go
    (INBOX,),
    (SPAM,),  # spam: not in All Mail
    ("Personal",),
    (TRASH,),  # trash: not in All Mail
    (INBOX, IMPORTANT),
)


@dataclass(frozen=True)
class GmailMessage:
    index: int
    raw: bytes
    internaldate: datetime
    flags: tuple[str, ...]
    labels: tuple[str, ...]  # the folders that show it, All Mail aside

    @property
    def in_all_mail(self) -> bool:
        return not ({SPAM, TRASH} & set(self.labels))

    @property
    def flags_at_target(self) -> frozenset[str]:
        """Its flags, and \\Flagged when starred."""
        return frozenset(self.flags) | ({"\\Flagged"} if STARRED in self.labels else set())

    @property
    def user_labels(self) -> list[str]:
        return sorted((f for f in self.labels if f not in SYSTEM), key=lambda n: (n.casefold(), n))


@dataclass(frozen=True)
class GmailAccount:
    """A Gmail-shaped mailbox of the test Dovecot (the gmail_account fixture)."""

    login: str
    password: str
    proxy: GmailProxy  # its SourceServer is proxy.url
    messages: list[GmailMessage]


class GmailAccountMaker(Protocol):
    def __call__(self, messages: Sequence[GmailMessage]) -> GmailAccount: ...


def gmail_messages(count: int, *, size_hint: int = 2000, seed: int = 0) -> list[GmailMessage]:
    messages = []
    for i in range(count):
        raw, when = make_message(i, folder="gmail", size_hint=size_hint, seed=seed)
        assert message_id(i, folder="gmail", seed=seed).encode() in raw
        labels = _PATTERNS[i % len(_PATTERNS)]
        # Not \Flagged even when starred: the copy must get it from the \Starred label.
        flags = tuple(f for f in message_flags(i) if f != "\\Flagged")
        messages.append(GmailMessage(i, raw, when, flags, labels))
    return messages


def fill_gmail(
    server: DovecotServer,
    login: str,
    password: str,
    messages: Sequence[GmailMessage],
    context: ssl.SSLContext,
) -> None:
    """A copy of each message in every folder that shows it, and in All Mail unless it is
    spam or trash (one MULTIAPPEND per folder)."""
    folders: dict[str, list[GmailMessage]] = {ALL_MAIL_FOLDER: []}
    for message in messages:
        if message.in_all_mail:
            folders[ALL_MAIL_FOLDER].append(message)
        for label in message.labels:
            folders.setdefault(label, []).append(message)
    with IMAPClient("127.0.0.1", server.imaps_port, ssl=True, ssl_context=context) as client:
        client.plain_login(login, password)
        for folder in (STARRED, IMPORTANT, SPAM, TRASH, SENT, *sorted(folders)):
            if not client.folder_exists(folder):
                client.create_folder(folder)
        for folder, members in folders.items():
            for start in range(0, len(members), 200):
                client.multiappend(
                    folder,
                    [
                        {"msg": m.raw, "flags": m.flags, "date": m.internaldate}
                        for m in members[start : start + 200]
                    ],
                )


def rule_folder(message: GmailMessage, *, spam_trash: bool = False) -> str | None:
    """Where the README's rule puts a message at a Dovecot target (None: not copied): the
    Inbox if labelled so, else Sent, else the first user label by name, else Archive;
    spam and trash only when asked for."""
    labels = set(message.labels)
    if SPAM in labels or TRASH in labels:
        return ("Junk" if SPAM in labels else "Trash") if spam_trash else None
    if INBOX in labels:
        return "INBOX"
    if SENT in labels:
        return "Sent"
    if message.user_labels:
        return default_map_target(tuple(message.user_labels[0].split("/")))
    return "Archive"


def copies_folders(message: GmailMessage) -> list[str]:
    """Where `--gmail-labels copies` puts a message: one copy per label that is a folder
    (not Starred or Important), or Archive."""
    places = [
        "INBOX" if label == INBOX else "Sent" if label == SENT else default_map_target(
            tuple(label.split("/"))
        )
        for label in message.labels
        if label not in (STARRED, IMPORTANT, SPAM, TRASH)
    ]  # fmt: skip
    if {SPAM, TRASH} & set(message.labels):
        return []
    return places or ["Archive"]


def expected(
    messages: Iterable[GmailMessage], placement: object = rule_folder
) -> dict[str, Counter[str]]:
    """Folder -> the digests of the messages it must hold."""
    wanted: dict[str, Counter[str]] = {}
    for message in messages:
        if placement is rule_folder:
            folder = rule_folder(message)
            places = [folder] if folder else []
        else:
            places = copies_folders(message)
        for place in places:
            wanted.setdefault(place, Counter())[digest(message.raw)] += 1
    return wanted


def held(
    server: DovecotServer, login: str, password: str, context: ssl.SSLContext
) -> dict[str, Counter[str]]:
    """Folder -> the digests of the messages a Dovecot mailbox holds (empty folders left out)."""
    view = snapshot(server, login, password, context)
    return {name: Counter(s.sha256 for s in items) for name, items in view.items() if items}

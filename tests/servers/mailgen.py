"""Deterministic test mail, and filling a real IMAP account with it.

The same (i, folder, seed) always gives the same bytes, so a test can rebuild what it put into a
source mailbox and compare it with what reached the target.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import random
import ssl
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.header import Header
from email.utils import format_datetime

from imapclient import IMAPClient

from .dovecot import DEFAULT_USER_PASSWORD, DovecotServer

# Dates are spread over these years, so date-range and newest-first tests have something to cut.
FIRST_DATE = dt.datetime(2015, 1, 1, tzinfo=dt.UTC)
DATE_SPAN = dt.timedelta(days=365 * 9)

ATTACHMENT_EVERY = 7  # every 7th message (i % 7 == 3) is multipart with a base64 attachment
LABEL = "$Label1"

_WORDS = [
    "mailbox",
    "migration",
    "archive",
    "quarterly",
    "report",
    "invoice",
    "meeting",
    "agenda",
    "draft",
    "review",
    "budget",
    "travel",
    "schedule",
    "update",
    "project",
    "customer",
    "server",
    "backup",
    "release",
    "notes",
    "holiday",
    "team",
    "lunch",
]


@dataclass(frozen=True)
class PopulatedMessage:
    """One message that populate() appended: what a migration must carry over."""

    folder: str
    index: int
    raw: bytes
    internaldate: dt.datetime  # timezone-aware UTC, whole seconds (IMAP's resolution)
    flags: tuple[str, ...]
    message_id: str | None

    @property
    def size(self) -> int:
        return len(self.raw)


def _rng(i: int, folder: str, seed: int) -> random.Random:
    # String seeds hash with SHA-512, so the sequence is the same in every process and run.
    return random.Random(f"{seed}/{folder}/{i}")


def message_id(i: int, *, folder: str, seed: int = 0) -> str:
    folder_tag = hashlib.sha256(folder.encode()).hexdigest()[:12]
    return f"<{seed}.{folder_tag}.{i}@mailgen.example.test>"


def message_date(i: int, *, folder: str, seed: int = 0) -> dt.datetime:
    seconds = _rng(i, folder, seed).randrange(int(DATE_SPAN.total_seconds()))
    return FIRST_DATE + dt.timedelta(seconds=seconds)


def message_flags(i: int) -> tuple[str, ...]:
    """Flags by index: two in three \\Seen, some \\Flagged, \\Answered and the keyword $Label1."""
    flags = []
    if i % 3 != 0:
        flags.append("\\Seen")
    if i % 5 == 1:
        flags.append("\\Flagged")
    if i % 4 == 2:
        flags.append("\\Answered")
    if i % 6 == 4:
        flags.append(LABEL)
    return tuple(flags)


def _corpus_lines() -> tuple[str, ...]:
    rng = random.Random("mailgen corpus")
    text = " ".join(rng.choice(_WORDS) for _ in range(40_000))
    return tuple(textwrap.wrap(text, width=72))


# Slicing a prepared text is ten times faster than choosing words per message.
_CORPUS = _corpus_lines()


def _text(rng: random.Random, size: int) -> str:
    """About *size* characters of wrapped prose with CRLF line breaks."""
    count = max(1, size // 70)
    if count >= len(_CORPUS):
        return "\r\n".join(_CORPUS * (count // len(_CORPUS) + 1))
    start = rng.randrange(len(_CORPUS) - count)
    return "\r\n".join(_CORPUS[start : start + count])


def make_message(
    i: int,
    *,
    folder: str,
    size_hint: int = 2000,
    with_message_id: bool = True,
    seed: int = 0,
) -> tuple[bytes, dt.datetime]:
    """An RFC 5322 message (CRLF line endings) and the date in its Date header.

    Sizes vary from about a third to three times *size_hint*; every 7th message carries a
    base64 attachment. The folder name appears in the Subject, RFC 2047-encoded when not ASCII.
    """
    rng = _rng(i, folder, seed)
    date = message_date(i, folder=folder, seed=seed)
    target_size = max(200, int(size_hint * rng.uniform(0.3, 3.0)))
    sender = rng.randrange(50)
    subject = f"Message {i} in {folder}"
    if not subject.isascii():
        subject = Header(subject, "utf-8").encode()  # RFC 2047
    headers = [
        f"From: Sender {sender} <sender{sender}@source.example.test>",
        "To: Mailbox Owner <owner@example.test>",
        f"Subject: {subject}",
        f"Date: {format_datetime(date)}",
    ]
    if with_message_id:
        headers.append(f"Message-ID: {message_id(i, folder=folder, seed=seed)}")
    headers.append("MIME-Version: 1.0")

    if i % ATTACHMENT_EVERY == 3:
        boundary = f"=_mailgen_{seed}_{i}"
        attachment = base64.encodebytes(rng.randbytes(target_size // 2)).decode("ascii")
        body = "\r\n".join(
            [
                "This is a multi-part message in MIME format.",
                f"--{boundary}",
                "Content-Type: text/plain; charset=us-ascii",
                "Content-Transfer-Encoding: 7bit",
                "",
                _text(rng, target_size // 3),
                f"--{boundary}",
                f'Content-Type: application/octet-stream; name="data-{i}.bin"',
                "Content-Transfer-Encoding: base64",
                f'Content-Disposition: attachment; filename="data-{i}.bin"',
                "",
                attachment.replace("\n", "\r\n").rstrip("\r\n"),
                f"--{boundary}--",
                "",
            ]
        )
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
    else:
        body = _text(rng, target_size) + "\r\n"
        headers.append("Content-Type: text/plain; charset=us-ascii")
        headers.append("Content-Transfer-Encoding: 7bit")

    raw = ("\r\n".join(headers) + "\r\n\r\n" + body).encode("ascii")
    return raw, date


def populate(
    host: str,
    port: int,
    login: str,
    password: str,
    folders: Mapping[str, int],
    *,
    ssl_context: ssl.SSLContext,
    seed: int = 0,
    starttls: bool = False,
    size_hint: int = 2000,
) -> list[PopulatedMessage]:
    """Create *folders* (name -> message count) and APPEND deterministic messages to them.

    Connects with implicit TLS, or with STARTTLS when *starttls* is true. Nested names use the
    server's separator ("Archive/2019"); non-ASCII names are fine (imapclient sends modified
    UTF-7, RFC 3501 5.1.3). Each folder's messages go in one MULTIAPPEND (RFC 3502) when the
    server offers it, with flags from message_flags() and INTERNALDATE = the Date header.
    Returns the messages in folder order, then index order.
    """
    appended: list[PopulatedMessage] = []
    with IMAPClient(host, port, ssl=not starttls, ssl_context=ssl_context, timeout=60) as client:
        if starttls:
            client.starttls(ssl_context)
        # AUTHENTICATE PLAIN sends UTF-8; imaplib's LOGIN is ASCII only (batch_password).
        client.plain_login(login, password)
        multiappend = client.has_capability("MULTIAPPEND")
        # Parents before children, so "Données" exists (selectable) before "Données/2019".
        for folder in sorted(folders, key=lambda name: (name.count("/"), name)):
            if not client.folder_exists(folder):
                client.create_folder(folder)
        for folder, count in folders.items():
            batch = []
            for i in range(count):
                raw, date = make_message(i, folder=folder, seed=seed, size_hint=size_hint)
                flags = message_flags(i)
                mid = message_id(i, folder=folder, seed=seed)
                batch.append(PopulatedMessage(folder, i, raw, date, flags, mid))
            if multiappend and batch:
                client.multiappend(
                    folder,
                    [{"msg": m.raw, "flags": m.flags, "date": m.internaldate} for m in batch],
                )
            else:
                for m in batch:
                    client.append(folder, m.raw, m.flags, m.internaldate)
            appended.extend(batch)
    return appended


class Fill:
    """The ``fill`` fixture: appends generated mail (populate, over IMAPS) to a mailbox of
    the test Dovecot, or of `server`, and returns the messages appended."""

    def __init__(self, dovecot: DovecotServer, context: ssl.SSLContext) -> None:
        self._dovecot, self._context = dovecot, context

    def __call__(
        self,
        login: str,
        folders: Mapping[str, int],
        password: str = DEFAULT_USER_PASSWORD,
        *,
        server: DovecotServer | None = None,
        size_hint: int = 2000,
        seed: int = 0,
    ) -> list[PopulatedMessage]:
        port = (server or self._dovecot).imaps_port
        return populate(
            "127.0.0.1", port, login, password, folders,
            ssl_context=self._context, size_hint=size_hint, seed=seed,
        )  # fmt: skip

    def append(
        self,
        login: str,
        folder: str,
        messages: Sequence[bytes | tuple[bytes, Sequence[str], dt.datetime]],
        password: str = DEFAULT_USER_PASSWORD,
    ) -> None:
        """Append `messages` as they are (raw, or (raw, flags, INTERNALDATE)) to `folder`,
        created if missing: mail populate() would not make."""
        with IMAPClient(
            "127.0.0.1", self._dovecot.imaps_port, ssl=True, ssl_context=self._context
        ) as client:
            client.plain_login(login, password)  # UTF-8: batch passwords are not ASCII
            if not client.folder_exists(folder):
                client.create_folder(folder)
            for message in messages:
                raw, flags, when = message if isinstance(message, tuple) else (message, (), None)
                client.append(folder, raw, flags, when)

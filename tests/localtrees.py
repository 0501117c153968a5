"""Building local sources for tests: Maildir trees and mbox files written from messages, as
a mail server or client would have left them, and the corpus's real messages to fill them.

The writers here are the tests' own, written from the formats' descriptions and not from
migrator's readers, so a reader that gets a format wrong fails against them."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from corpus import CORPUS
from imapclient import imap_utf7

# What a Maildir info letter and an mbox status letter stand for (the formats' own tables).
MAILDIR_LETTERS = {"\\Draft": "D", "\\Flagged": "F", "\\Answered": "R", "\\Seen": "S"}
STATUS_LETTERS = {"\\Seen": "R"}
X_STATUS_LETTERS = {"\\Answered": "A", "\\Flagged": "F", "\\Draft": "T"}
_MOZILLA_BITS = ((0x1, "\\Seen"), (0x2, "\\Answered"), (0x4, "\\Flagged"))
_BOM = b"\xef\xbb\xbf"
_FIELD_LINE = re.compile(rb"[\x21-\x39\x3b-\x7e]+:")


@dataclass(frozen=True)
class LocalMessage:
    """One message of a local source: its folder ("INBOX", "Archive/2019"), its bytes as
    the target must hold them, the arrival date the file keeps, and its flags."""

    folder: str
    raw: bytes
    date: datetime  # UTC, whole seconds
    flags: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return len(self.raw)


# -- the corpus --------------------------------------------------------------------------


def corpus_originals() -> list[tuple[str, bytes]]:
    """(name, bytes) of every real message in the corpus.  A file that starts with a From_
    line is an mbox file: a message starts at a "From " line followed by a header field, so
    an unescaped body line such as "From Russia with love" (the "unmunged" file) stays in
    its message, and the message keeps every byte between its From_ line and the next
    (the separator empty line left out).  Each message ends with a line end, as a message in
    an mbox file must."""
    if not CORPUS.is_dir():
        raise FileNotFoundError(f"no corpus at {CORPUS}: set MIGRATOR_CORPUS")
    found: list[tuple[str, bytes]] = []
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".md"):
        data = path.read_bytes().removeprefix(_BOM)
        name = str(path.relative_to(CORPUS))
        if not data.startswith(b"From "):
            found.append((name, _line_ended(data)))
            continue
        for number, message in enumerate(_split_mbox(data)):
            found.append((f"{name}#{number}", _line_ended(message)))
    return found


def _split_mbox(data: bytes) -> list[bytes]:
    lines = data.splitlines(keepends=True)
    starts = [
        i
        for i, line in enumerate(lines)
        if line.startswith(b"From ") and i + 1 < len(lines) and _FIELD_LINE.match(lines[i + 1])
    ]
    messages = []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(lines)
        body = lines[start + 1 : end]
        if body and body[-1] in (b"\n", b"\r\n"):
            body = body[:-1]  # the separator
        messages.append(b"".join(body))
    return messages


def _line_ended(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"


def spread(
    originals: Sequence[bytes],
    folders: Sequence[str],
    *,
    seed: int = 7,
    first: datetime = datetime(2012, 1, 1, tzinfo=UTC),
) -> list[LocalMessage]:
    """The messages dealt to `folders` in turn, each with its own arrival date (distinct,
    in an order unlike the list's) and flags by its place in the list."""
    rng = random.Random(seed)
    offsets = rng.sample(range(1, 3650 * 24), len(originals))
    messages = []
    for index, raw in enumerate(originals):
        flags = []
        if index % 3 != 0:
            flags.append("\\Seen")
        if index % 5 == 1:
            flags.append("\\Flagged")
        if index % 4 == 2:
            flags.append("\\Answered")
        date = first + timedelta(hours=offsets[index], seconds=index)
        messages.append(LocalMessage(folders[index % len(folders)], raw, date, tuple(flags)))
    return messages


# -- Maildir -----------------------------------------------------------------------------


def maildir_name(message: LocalMessage, number: int) -> tuple[str, str]:
    """(subdirectory, file name) a Maildir server gives the message: an unseen message
    without flags waits in new/ without an info; the others are in cur/ with theirs."""
    unique = f"{int(message.date.timestamp())}.M{number}P4242.test.example,S={message.size}"
    letters = "".join(sorted(MAILDIR_LETTERS[f] for f in message.flags if f in MAILDIR_LETTERS))
    if not letters and number % 2:
        return "new", unique
    return "cur", f"{unique}:2,{letters}"


def write_maildir(root: Path, messages: Iterable[LocalMessage], *, nested: bool = False) -> Path:
    """A Maildir at `root`: the Inbox in root's own cur/ and new/, the other folders as
    Maildir++ directories (".Archive.2019"), or with `nested` as directories within
    directories ("Archive/2019/cur"), names in modified UTF-7; each file's mtime its date."""
    for number, message in enumerate(messages):
        directory = root
        if message.folder != "INBOX":
            parts = [imap_utf7.encode(p).decode("ascii") for p in message.folder.split("/")]
            directory = root.joinpath(*parts) if nested else root / ("." + ".".join(parts))
        sub, name = maildir_name(message, number)
        for part in ("cur", "new", "tmp"):
            (directory / part).mkdir(parents=True, exist_ok=True)
        path = directory / sub / name
        path.write_bytes(message.raw)
        stamp = message.date.timestamp()
        os.utime(path, (stamp, stamp))
    return root


# -- mbox --------------------------------------------------------------------------------


def mboxrd_escape(raw: bytes) -> bytes:
    """mboxrd: every line that matches ">*From " gets one more ">"."""
    return re.sub(rb"(?m)^(>*From )", rb">\1", raw)


def with_status(raw: bytes, flags: Sequence[str]) -> bytes:
    """The message with the Status and X-Status fields an mbox client writes for `flags`,
    on top of its header, in its own line ends."""
    end = b"\r\n" if raw.split(b"\n", 1)[0].endswith(b"\r") else b"\n"
    status = "".join(STATUS_LETTERS[f] for f in flags if f in STATUS_LETTERS) + "O"
    x_status = "".join(X_STATUS_LETTERS[f] for f in flags if f in X_STATUS_LETTERS)
    fields = b"Status: " + status.encode() + end
    if x_status:
        fields += b"X-Status: " + x_status.encode() + end
    return fields + raw


def from_line(date: datetime, crlf: bool = False) -> bytes:
    """A From_ line as mutt and Dovecot write it: sender, then the asctime date (UTC)."""
    text = f"From MAILER-DAEMON {date.astimezone(UTC).strftime('%a %b %d %H:%M:%S %Y')}"
    return text.encode("ascii") + (b"\r\n" if crlf else b"\n")


def mbox_bytes(messages: Iterable[LocalMessage], *, crlf: bool = False) -> bytes:
    """An mboxrd file of the messages (their bytes as they are, so a message's Status
    fields are those it holds): From_ line, escaped message, empty line."""
    out = []
    for message in messages:
        raw = crlf_lines(message.raw) if crlf else message.raw
        out += [from_line(message.date, crlf), mboxrd_escape(raw), b"\r\n" if crlf else b"\n"]
    return b"".join(out)


def crlf_lines(raw: bytes) -> bytes:
    return re.sub(rb"\r?\n", b"\r\n", raw)


def mbox_messages(messages: Sequence[LocalMessage]) -> list[LocalMessage]:
    """The messages as an mbox client keeps them: each with its Status fields.  A message
    that holds a Thunderbird X-Mozilla-Status field of its own (the corpus has some) also
    has the flags that field gives: read (1), replied (2), marked (4)."""
    kept = []
    for m in messages:
        header = re.split(rb"\r?\n\r?\n", m.raw, maxsplit=1)[0]
        found = re.search(rb"(?im)^X-Mozilla-Status:[ \t]*([0-9a-f]{4})[ \t]*\r?$", header)
        bits = int(found.group(1), 16) if found else 0
        mozilla = [flag for bit, flag in _MOZILLA_BITS if bits & bit and flag not in m.flags]
        kept.append(
            LocalMessage(m.folder, with_status(m.raw, m.flags), m.date, (*m.flags, *mozilla))
        )
    return kept


def write_thunderbird(
    root: Path, messages: Sequence[LocalMessage], *, crlf_folders: Sequence[str] = ()
) -> Path:
    """A Thunderbird profile's mail directory at `root`: a file per folder ("Inbox",
    "Archive"), subfolders in "Archive.sbd/", an .msf index beside each file, and the
    folders in `crlf_folders` written with CRLF line ends."""
    by_folder: dict[str, list[LocalMessage]] = {}
    for message in messages:
        by_folder.setdefault(message.folder, []).append(message)
    for folder, members in by_folder.items():
        parts = ["Inbox" if folder == "INBOX" else folder.split("/")[0]]
        parts += folder.split("/")[1:]
        path = root.joinpath(*[p + ".sbd" for p in parts[:-1]], parts[-1])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mbox_bytes(members, crlf=folder in crlf_folders))
        path.with_name(path.name + ".msf").write_bytes(b'// <!-- <mdb:mork:z v="1.4"/> -->\n')
    (root / "msgFilterRules.dat").write_bytes(b'version="9"\nlogging="no"\n')
    return root


def as_dovecot_stores(raw: bytes) -> bytes:
    """What Dovecot gives back for an APPENDed message: every bare LF (and lone CR) as CRLF
    (it stores lines, and IMAP sends CRLF)."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw)

"""Gmail as a source: where each message goes, its labels as keywords, the daily caps
(pure: values in, values out; the IMAP adapter is connectors/imap/gmail.py).

Over IMAP a Gmail label is a folder: a message with three labels shows in three folders,
and every message also shows in `[Gmail]/All Mail`, where an archived one (no label left)
is found only.  Gmail says which message is which (`X-GM-MSGID`, one id however many
folders show it) and what labels it has (`X-GM-LABELS`), with the `X-GM-EXT-1`
capability.  Each message is copied once, to one folder (`LabelMode.RULE`):

    the Inbox if labelled so, else Sent, else Drafts, else the first user label by a
    stable order (case-folded name, then name), else Archive;

its other user labels become keywords (IMAP targets that keep them) or categories
(Exchange).  `LabelMode.COPIES` puts a copy in the folder of every label instead (then
the labels need no keywords).  Important and Starred are not folders at the target
(Starred becomes \\Flagged); Spam and Trash are copied only when asked for.
"""

from __future__ import annotations

import base64
import enum
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from migrator.secrets import Secret

CAPABILITY = "X-GM-EXT-1"
MB = 1024 * 1024
# Gmail's published IMAP bandwidth limits per user and day (about).
DOWNLOAD_CAP = 2500 * MB
UPLOAD_CAP = 500 * MB
DAY = 86400.0
# After a cut-off (BYE, a stall) the mailbox waits this share of the window: Gmail does
# not say how long it holds a client off.
CUTOFF_SHARE = 1 / 24
# A lost connection is retried as any other; the second within this many seconds is
# Gmail's cut-off (its BYE often arrives inside a literal, so the client sees only EOF:
# one loss cannot tell Gmail's limit from a network reset).  Longer than every wait
# between a mailbox's passes (migrator.copier: 1, 2, 4, ... seconds).
CUTOFF_STRIKES_WITHIN = 600.0

# System labels (X-GM-LABELS) and the RFC 6154 flag of the folder that shows each.
INBOX = "\\Inbox"
SENT = "\\Sent"
DRAFT = "\\Draft"
STARRED = "\\Starred"
IMPORTANT = "\\Important"
SPAM = "\\Spam"
TRASH = "\\Trash"
SPECIAL_USE_LABEL = {
    "\\sent": SENT,
    "\\drafts": DRAFT,
    "\\flagged": STARRED,
    "\\important": IMPORTANT,
    "\\junk": SPAM,
    "\\trash": TRASH,
}
# Labels whose folders are never copied: views of mail other folders hold.
NOT_FOLDERS = frozenset({STARRED, IMPORTANT})
ARCHIVE_PATH = ("Archive",)


class LabelMode(enum.StrEnum):
    RULE = "rule"  # one copy, in the folder the rule picks
    COPIES = "copies"  # one copy per label's folder


class Direction(enum.StrEnum):
    DOWNLOAD = "download"  # bytes read from a Gmail mailbox
    UPLOAD = "upload"  # bytes written to one


@dataclass(frozen=True)
class GmailSettings:
    """What a job carries for a Gmail end (connectors.base.Settings: no secret)."""

    labels: LabelMode = LabelMode.RULE
    include_spam_trash: bool = False
    download_cap: int = DOWNLOAD_CAP  # bytes per rolling window
    upload_cap: int = UPLOAD_CAP
    cap_window: float = DAY  # seconds: Gmail's rolling day
    forced: bool = False  # --source-type gmail: Gmail whether or not it says X-GM-EXT-1

    @property
    def cutoff_pause(self) -> float:
        return self.cap_window * CUTOFF_SHARE

    def cap(self, direction: Direction) -> int:
        return self.download_cap if direction is Direction.DOWNLOAD else self.upload_cap

    @property
    def secret(self) -> Secret | None:
        return None

    def with_secret(self, secret: Secret | None) -> GmailSettings:
        return self

    def to_json(self) -> dict[str, Any]:
        return {
            "gmail_labels": self.labels.value,
            "include_spam_trash": self.include_spam_trash,
            "download_cap": self.download_cap,
            "upload_cap": self.upload_cap,
            "cap_window": self.cap_window,
            "forced": self.forced,
        }

    def bound(self) -> dict[str, object]:
        return {}  # no secret of its own; nothing here decides where a password goes

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> GmailSettings:
        return cls(
            labels=LabelMode(data.get("gmail_labels", LabelMode.RULE.value)),
            include_spam_trash=bool(data.get("include_spam_trash", False)),
            download_cap=int(data.get("download_cap", DOWNLOAD_CAP)),
            upload_cap=int(data.get("upload_cap", UPLOAD_CAP)),
            cap_window=float(data.get("cap_window", DAY)),
            forced=bool(data.get("forced", False)),
        )


class ByteMeter(Protocol):
    """Bytes moved to or from one Gmail mailbox in a rolling window, shared by every worker
    (state.dailycaps keeps it in Redis)."""

    def reserve(self, sizes: list[int], *, whole: bool = False) -> tuple[int, float | None]:
        """Count the longest prefix of `sizes` that stays within the cap (`whole`: all of
        them or none): how many, and (when not all) the time (epoch seconds) the next
        would fit.  Where nothing is counted in the window, the first one (`whole`: all)
        goes however big, so a message past the cap still goes once the window is clear."""
        ...

    def reached(self, until: float) -> None:
        """The server cut the mailbox off: count the cap as reached until `until`."""
        ...

    def lost(self, within: float) -> bool:
        """A connection to the mailbox was lost: True where another was lost less than
        `within` seconds before (by any worker), False for the first (noted)."""
        ...


class ByteMeters(Protocol):
    """Where the adapters get their meters (the runner hands one in: SourceEnd.meters)."""

    def meter(self, direction: Direction, mailbox: str, cap: int, window: float) -> ByteMeter: ...


@dataclass(frozen=True)
class Folders:
    """The folders of a Gmail account that can receive a message, by what they show."""

    system: Mapping[str, str] = field(default_factory=dict)  # system label -> folder name
    user: Mapping[str, str] = field(default_factory=dict)  # user label -> folder name
    archive: str = "[Gmail]/All Mail"  # where the archived messages are read


def places(
    labels: Collection[str], folders: Folders, mode: LabelMode, *, spam_trash: bool
) -> list[str]:
    """The folders (source names, for the folder map) a message with `labels` is copied
    to; empty when it is not copied (spam or trash, unless asked for)."""
    if SPAM in labels or TRASH in labels:
        label = TRASH if TRASH in labels else SPAM
        return [folders.system[label]] if spam_trash and label in folders.system else []
    system = [folders.system[label] for label in (INBOX, SENT, DRAFT) if label in labels]
    user = [folders.user[label] for label in user_labels(labels) if label in folders.user]
    ordered = system + user
    if not ordered:
        return [folders.archive]
    return ordered[:1] if mode is LabelMode.RULE else list(dict.fromkeys(ordered))


def user_labels(labels: Collection[str]) -> list[str]:
    """The user's own labels (not \\Inbox, \\Sent ...), in the rule's stable order."""
    return sorted((lb for lb in labels if not lb.startswith("\\")), key=lambda n: (n.casefold(), n))


def keywords(labels: Collection[str], placed: str, folders: Folders) -> tuple[str, ...]:
    """The labels a copy in `placed` (RULE) carries as keywords: its user labels but the
    one its folder is."""
    return tuple(
        label_keyword(label) for label in user_labels(labels) if folders.user.get(label) != placed
    )


# RFC 3501 atom-specials, the keyword's own (\\ starts a system flag) and "[" (clients
# read it as a section): not in a keyword.
_NOT_IN_ATOM = re.compile(r'[\x00-\x20\x7f(){%*"\\\[\]]')
_ESCAPED = re.compile(r"_([0-9A-F]{2})")


def label_keyword(label: str) -> str:
    """A user label as an IMAP keyword: modified UTF-7 (RFC 3501 5.1.3) for what is not
    ASCII, `_XX` for what an atom cannot hold (and `_` itself); `keyword_label` undoes it."""
    text = _mutf7(label.replace("_", "_5F"))
    return _NOT_IN_ATOM.sub(lambda m: f"_{ord(m.group()):02X}", text)


def keyword_label(keyword: str) -> str:
    """The label `label_keyword` made `keyword` from (Exchange categories read so)."""
    text = _ESCAPED.sub(lambda m: chr(int(m.group(1), 16)), keyword)
    return _un_mutf7(text)


def _mutf7(text: str) -> str:
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            encoded = "".join(run).encode("utf-16-be")
            b64 = base64.b64encode(encoded).decode("ascii").rstrip("=").replace("/", ",")
            out.append(f"&{b64}-")
            run.clear()

    for char in text:
        if " " <= char <= "~":
            flush()
            out.append("&-" if char == "&" else char)
        else:
            run.append(char)
    flush()
    return "".join(out)


_MUTF7_RUN = re.compile(r"&([A-Za-z0-9+,]*)-")


def _un_mutf7(text: str) -> str:
    def decode(match: re.Match[str]) -> str:
        body = match.group(1)
        if not body:
            return "&"
        padded = body.replace(",", "/") + "=" * (-len(body) % 4)
        return base64.b64decode(padded).decode("utf-16-be")

    return _MUTF7_RUN.sub(decode, text)


# Hosts that are Gmail whatever they announce (forwarding is decided without a session).
GMAIL_HOSTS = ("imap.gmail.com", "imap.googlemail.com")


def forwarding_steps(action: str, source: str, target: str) -> str:
    """What the operator does by hand to forward a Gmail mailbox (`action`: set, remove or
    status): Gmail has no ManageSieve, and its forwarding API needs the service account's
    domain-wide delegation for the gmail.settings.sharing scope, which migrator does not ask."""
    where = (
        f"in Gmail signed in as {source}: Settings (the gear), See all settings, "
        "Forwarding and POP/IMAP"
    )
    if action == "remove":
        return (
            f"Gmail has no ManageSieve: remove the forwarding by hand {where}: Disable "
            f"forwarding (or, under Add a forwarding address, remove {target}), Save Changes; "
            f"or, where a Workspace admin set a routing rule for {source}, delete it (Admin "
            "console, Apps, Google Workspace, Gmail, Routing)"
        )
    if action == "status":
        return (
            f"Gmail has no ManageSieve: check by hand {where} (and the Admin console's "
            "Gmail Routing)"
        )
    return (
        f"Gmail has no ManageSieve: set forwarding by hand {where}: 1. Add a forwarding "
        f"address: {target}, Next, Proceed; 2. open the confirmation Gmail sends to {target} "
        f"and confirm (or type its code there); 3. Forward a copy of incoming mail to {target} "
        "and keep Gmail's copy in the Inbox; 4. Save Changes. A Workspace admin can instead, "
        "with no confirmation: Admin console, Apps, Google Workspace, Gmail, Routing, "
        f"Configure: messages for {source}, Also deliver to: {target}"
    )

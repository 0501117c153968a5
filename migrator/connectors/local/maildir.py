"""Maildir: message file names, their flags and keywords, and the folders of a tree
(pure, but for `find_folders` and `message_files`, which read directories).

A message is a file in `cur/` or `new/` of a folder's directory, named
`UNIQUE:2,FLAGS` (https://cr.yp.to/proto/maildir.html).  UNIQUE never changes while the
message lives, even when a client renames the file to change its flags, so it is what
the checkpoint id is made of.  FLAGS are letters in ASCII order: upper case for the
system flags, lower case for keywords (Dovecot: the N-th line of the folder's
`dovecot-keywords`, "a" being 0).

Folders: the root's own `cur/` and `new/` are the Inbox; Maildir++ (Courier, Dovecot's
default layout) keeps every other folder in a directory `.a.b` beside them, for the
folder a/b; Dovecot's LAYOUT=fs and mbsync nest directories instead (`a/b/cur`).  Both
are read.  Names are IMAP's modified UTF-7 on disk (RFC 3501 5.1.3), decoded here.
Symbolic links are never followed: a link could lead out of --source-root.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The info letters with an IMAP system flag.  P (passed: resent or bounced) has none.
INFO_FLAGS: Mapping[str, str] = {
    "D": "\\Draft",
    "F": "\\Flagged",
    "R": "\\Answered",
    "S": "\\Seen",
    "T": "\\Deleted",  # trashed: Dovecot's \Deleted, not yet expunged
}
SEEN = "\\Seen"
INBOX = ("INBOX",)
KEYWORDS_FILE = "dovecot-keywords"
_MAILDIR_PARTS = frozenset({"cur", "new", "tmp"})
MAX_DEPTH = 64  # levels of nested folders read; a deeper tree is a loop or a mistake


@dataclass(frozen=True)
class MaildirFolder:
    path: tuple[str, ...]  # "INBOX", or the folder's components, decoded
    directory: str  # the directory holding its cur/ and new/


def parse_name(name: str, keywords: Mapping[str, str] | None = None) -> tuple[str, tuple[str, ...]]:
    """(unique part, IMAP flags) of the message file name `name`.  `keywords` maps a
    keyword letter ("a".."z") to its name; a letter it does not name is dropped, as is
    an info of another version than "2," (none is in use)."""
    unique, separator, info = name.partition(":")
    if not separator or not info.startswith("2,"):
        return unique, ()
    flags: list[str] = []
    for letter in info[2:]:
        flag = INFO_FLAGS.get(letter) or (keywords or {}).get(letter)
        if flag is not None and flag not in flags:
            flags.append(flag)
    return unique, tuple(flags)


def parse_keywords(text: str) -> dict[str, str]:
    """Dovecot's `dovecot-keywords` ("0 $Label1" per line) as letter -> keyword."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        number, _, keyword = line.strip().partition(" ")
        keyword = keyword.strip()
        if number.isdigit() and int(number) < 26 and keyword and _is_atom(keyword):
            found[chr(ord("a") + int(number))] = keyword
    return found


def _is_atom(word: str) -> bool:
    """An IMAP flag keyword: an atom (RFC 3501 9), which a target can store."""
    return word.isascii() and all(c > " " and c not in '(){%*"\\]' and c != "\x7f" for c in word)


def decode_folder_name(name: str) -> str:
    """A folder name component as IMAP's modified UTF-7 writes it on disk ("Entw&APw-rfe"
    -> "Entwürfe"); a name that is not valid modified UTF-7 stays as it is."""
    if "&" not in name:
        return name
    out: list[str] = []
    index = 0
    while index < len(name):
        start = name.find("&", index)
        if start == -1:
            out.append(name[index:])
            break
        end = name.find("-", start)
        if end == -1:
            return name
        out.append(name[index:start])
        chunk = name[start + 1 : end]
        if not chunk:
            out.append("&")
        else:
            encoded = chunk.replace(",", "/")
            try:
                raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
                out.append(raw.decode("utf-16-be"))
            except (binascii.Error, UnicodeDecodeError):
                return name
        index = end + 1
    return "".join(out)


def is_maildir(directory: str) -> bool:
    """Whether `directory` is a Maildir folder: it has cur/ or new/ (tmp/ may be missing:
    archives and backups often drop empty directories)."""
    return _real_dir(os.path.join(directory, "cur")) or _real_dir(os.path.join(directory, "new"))


def _real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def find_folders(root: str) -> list[MaildirFolder]:
    """Every folder of the Maildir tree at `root`, the Inbox first, then by name."""
    found: list[MaildirFolder] = []
    if is_maildir(root):
        found.append(MaildirFolder(INBOX, root))
    for entry in _directories(root):
        if entry.name.startswith("."):
            # Maildir++: ".a.b" is the folder a/b; a name with an empty level is kept whole.
            parts = entry.name[1:].split(".")
            path = tuple(parts) if all(parts) else (entry.name[1:],)
            if is_maildir(entry.path):
                found.append(MaildirFolder(tuple(map(decode_folder_name, path)), entry.path))
        else:
            found.extend(_nested(entry.path, (decode_folder_name(entry.name),), 1))
    return found


def _nested(directory: str, path: tuple[str, ...], depth: int) -> Iterator[MaildirFolder]:
    """LAYOUT=fs: a directory is a folder where it has cur/ or new/, and its other
    directories are its subfolders (a directory without either only holds the levels
    below it)."""
    if is_maildir(directory):
        yield MaildirFolder(path, directory)
    if depth >= MAX_DEPTH:
        return
    for entry in _directories(directory):
        if not entry.name.startswith("."):
            yield from _nested(entry.path, (*path, decode_folder_name(entry.name)), depth + 1)


def _directories(directory: str) -> list[os.DirEntry[str]]:
    """The directories in `directory` that may be folders, by name; links not followed."""
    with os.scandir(directory) as entries:
        return sorted(
            (
                e
                for e in entries
                if e.name not in _MAILDIR_PARTS and e.is_dir(follow_symlinks=False)
            ),
            key=lambda e: e.name,
        )


def read_keywords(directory: str) -> dict[str, str]:
    """The keyword letters of the folder at `directory` (none without the file)."""
    path = os.path.join(directory, KEYWORDS_FILE)
    if not os.path.isfile(path) or os.path.islink(path):
        return {}
    with open(path, encoding="utf-8", errors="replace") as handle:
        return parse_keywords(handle.read(64 * 1024))


def message_files(directory: str) -> dict[str, tuple[str, os.DirEntry[str]]]:
    """The message files of the folder at `directory`, by unique part: (its subdirectory,
    its entry).  new/ is read before cur/, so a message a client moved from one to the
    other meanwhile is seen once at least, and counts once, with its cur/ name.  Names
    starting with "." are not messages (the Maildir rule); links are not followed."""
    found: dict[str, tuple[str, os.DirEntry[str]]] = {}
    for sub in ("new", "cur"):
        path = os.path.join(directory, sub)
        if not _real_dir(path):
            continue
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.name.startswith("."):
                    continue
                if entry.is_symlink():
                    log.warning(
                        "%s is a symbolic link: not read (it may lead anywhere)", entry.path
                    )
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
                found[entry.name.partition(":")[0]] = (sub, entry)
    return found


def flags_in(sub: str, flags: tuple[str, ...]) -> tuple[str, ...]:
    """A message in new/ has not been seen by any client, whatever its name says."""
    return tuple(f for f in flags if f != SEEN) if sub == "new" else flags

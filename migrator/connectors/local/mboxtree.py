"""The folders of a directory of mbox files, as mail clients keep and export them.

- Every mbox file is a folder named after it (Thunderbird: `Inbox`, `Sent`, `Trash`).
- Thunderbird keeps a folder's subfolders in a directory beside it, `Name.sbd/`.
- Apple Mail exports a folder as a bundle `Name.mbox/` holding the file `mbox`, and its
  subfolders as bundles inside it (`Name.mbox/Child.mbox/mbox`).
- Any other directory is a level of the folder tree that holds no mail of its own.

A file is an mbox file when it is empty or starts with a From_ line: Thunderbird's
`.msf` indexes, `msgFilterRules.dat`, Apple Mail's `Info.plist` and `table_of_contents`
are not, and are passed over.  Names starting with "." are hidden files, passed over
too.  Symbolic links are never followed: a link could lead out of --source-root.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from migrator.connectors.local.mbox import looks_like_mbox

log = logging.getLogger(__name__)

MAX_DEPTH = 64  # levels of nested folders read; a deeper tree is a loop or a mistake
_SNIFF = 4096
_THUNDERBIRD_DIR = ".sbd"
_APPLE_BUNDLE = ".mbox"
_APPLE_FILE = "mbox"


@dataclass(frozen=True)
class MboxFolder:
    path: tuple[str, ...]  # the folder's components
    file: str  # its mbox file


def find_folders(directory: str) -> list[MboxFolder]:
    """Every mbox folder below `directory`, parents before their children, by name."""
    found: list[MboxFolder] = []
    _walk(directory, (), found, bundle=False)
    return found


def _walk(
    directory: str, prefix: tuple[str, ...], found: list[MboxFolder], *, bundle: bool
) -> None:
    if len(prefix) >= MAX_DEPTH:
        return
    with os.scandir(directory) as scanned:
        entries = sorted(scanned, key=lambda e: e.name)
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        if entry.is_symlink():
            log.warning("%s is a symbolic link: not read (it could lead anywhere)", entry.path)
        elif entry.is_file(follow_symlinks=False):
            if not (bundle and name == _APPLE_FILE) and is_mbox_file(entry.path):
                found.append(MboxFolder((*prefix, name), entry.path))
        elif entry.is_dir(follow_symlinks=False):
            _directory(entry, prefix, found)


def _directory(entry: os.DirEntry[str], prefix: tuple[str, ...], found: list[MboxFolder]) -> None:
    name = entry.name
    if name.endswith(_APPLE_BUNDLE) and len(name) > len(_APPLE_BUNDLE):
        folder = (*prefix, name[: -len(_APPLE_BUNDLE)])
        inner = os.path.join(entry.path, _APPLE_FILE)
        if os.path.isfile(inner) and not os.path.islink(inner) and is_mbox_file(inner):
            found.append(MboxFolder(folder, inner))
        _walk(entry.path, folder, found, bundle=True)
    elif name.endswith(_THUNDERBIRD_DIR) and len(name) > len(_THUNDERBIRD_DIR):
        _walk(entry.path, (*prefix, name[: -len(_THUNDERBIRD_DIR)]), found, bundle=False)
    else:
        _walk(entry.path, (*prefix, name), found, bundle=False)


def is_mbox_file(path: str) -> bool:
    """Whether the file at `path` is empty or starts with a From_ line."""
    with open(path, "rb") as handle:
        return looks_like_mbox(handle.read(_SNIFF))

"""Where a local source lives: a path below the operator's `--source-root`.

The batch's SourceServer cell names the mailbox as a path relative to the root: an mbox
file, a directory of mbox files, or a Maildir.  Nothing outside the root is ever read.
The cell is checked twice: as text when the batch is read (`relative_path`: no absolute
path, no `..` that climbs out), and on the file system (`resolve`: symbolic links and
`..` followed, the result still inside the root), once where the batch is enqueued and
again by the worker before it opens anything, since a link may change in between.
"""

from __future__ import annotations

import os
import posixpath
import re

from migrator.errors import PathOutsideRoot, SourceNotFound

# The source types (`--source-type`) whose SourceServer is a path, not a server.
LOCAL_KINDS = frozenset({"maildir", "mbox"})
# A Windows drive ("C:\\", "c:/") or UNC path ("\\\\host"): absolute for whoever typed it.
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def relative_path(text: str) -> str:
    """The cell `text` as a normalised relative path ("a/./b" -> "a/b").  Raises
    ValueError, in words for the person who typed the cell, for an empty cell, an
    absolute path, or one whose `..` climbs above the root."""
    if not text:
        raise ValueError("the path is empty")
    if "\0" in text:
        raise ValueError("the path holds a NUL character")
    if text.startswith("/") or _WINDOWS_ABSOLUTE.match(text):
        raise ValueError("is an absolute path; give a path relative to --source-root")
    normal = posixpath.normpath(text)
    if normal == ".." or normal.startswith("../"):
        raise ValueError("climbs out of --source-root with '..'")
    return normal


def resolve(root: str, relative: str, *, what: str) -> str:
    """The real path (links and `..` followed) of `relative` below `root`.  Raises
    PathOutsideRoot, naming `what` (the mailbox or CSV line), when it lies outside the
    root's own real path.  The path need not exist: what does not is taken as written."""
    base = os.path.realpath(root)
    full = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, full]) != base:
        raise PathOutsideRoot(
            f"{what}: {relative!r} leads outside --source-root {root} (to {full}); "
            "a local source must lie below it"
        )
    return full


def checked(root: str, path: str, *, what: str) -> str:
    """The real path of `path` (an absolute path `resolve` gave where the batch was
    enqueued), checked again now: still inside `root`, and there.  Raises PathOutsideRoot
    or SourceNotFound."""
    full = resolve(root, path, what=what)
    if not os.path.lexists(full):
        raise SourceNotFound(f"{what}: {full} does not exist")
    return full

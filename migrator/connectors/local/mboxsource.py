"""MboxSource: an mbox file, or a directory of them, below --source-root, read as a
MailboxSource.

Listing a folder reads its file once, from start to end, and keeps where each message
lies (`mbox.index_mbox`), never the messages: a file of many gigabytes costs one
sequential read and a few hundred bytes a message.  Fetching reads each message at its
offsets.  A file that changed since it was listed (a client appended to it, or
compacted it) is listed again on the next pass rather than read at stale offsets.

A message's checkpoint id is made of its header block without the state fields a client
rewrites (`mbox.stable_key`) and which copy of that header block in the file it is: the
same on every run over an unchanged file, and also after the file is compacted or a
message's flags change; not its offset, which any change before it moves.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from migrator.connectors.local import mbox, mboxtree
from migrator.connectors.local.paths import checked
from migrator.connectors.local.refs import (
    FileReads,
    checkpoint_id,
    describe,
    folder_uidvalidity,
    message_ref,
    os_errors,
    unique_name,
)
from migrator.connectors.local.settings import LocalSettings
from migrator.errors import PermanentError, TransientError
from migrator.model import MailboxJob
from migrator.plan import MessageRef
from migrator.sources.base import SourceFolder

KIND = "mbox"
INBOX = ("INBOX",)
_READ_BUFFER = 1024 * 1024


@dataclass(frozen=True)
class _Indexed:
    """One folder's file as listed: what tells whether it changed since, and where each
    message lies, by checkpoint id."""

    file: str
    stamp: tuple[int, int, int]  # (inode, size, mtime in ns)
    entries: dict[str, mbox.MboxEntry]


def _stamp(status: os.stat_result) -> tuple[int, int, int]:
    return (status.st_ino, status.st_size, status.st_mtime_ns)


class MboxSource(FileReads):
    def __init__(self, job: MailboxJob, settings: LocalSettings) -> None:
        self._job, self._settings = job, settings
        self._what = describe(job)
        self._format = settings.mbox_format
        self._path = checked(settings.root, job.source_server.host, what=self._what)
        self._files: dict[str, str] = {}  # folder name -> its mbox file
        self._indexed: dict[str, _Indexed] = {}  # folder name -> its index, once listed
        self._handles: dict[str, BinaryIO] = {}  # folder name -> its file, open to read

    # -- listing -------------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        with os_errors(self._what):
            if os.path.isdir(self._path):
                found = [(f.path, f.file) for f in mboxtree.find_folders(self._path)]
                if not found:
                    raise PermanentError(f"{self._what}: {self._path} holds no mbox file")
            elif mboxtree.is_mbox_file(self._path):
                found = [(INBOX, self._path)]
            else:
                raise PermanentError(
                    f"{self._what}: {self._path} is not an mbox file: it does not start "
                    "with a From_ line (a Maildir is read with --source-type maildir)"
                )
        folders = []
        files: dict[str, str] = {}
        for path, file in found:
            name = unique_name("/".join(path), files)
            files[name] = file
            folders.append(SourceFolder(name=name, path=path))
        self._files = files
        return folders

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        file = self._files[folder.name]
        what = f"{self._what}, folder {folder.name!r}"
        now = datetime.now(UTC)
        uidvalidity = folder_uidvalidity(KIND, folder.name)
        refs = []
        entries: dict[str, mbox.MboxEntry] = {}
        seen: Counter[str] = Counter()
        with os_errors(what), open(file, "rb", buffering=_READ_BUFFER) as handle:
            stamp = _stamp(os.fstat(handle.fileno()))
            try:
                for entry, head in mbox.index_mbox(handle, self._format):
                    key = mbox.stable_key(head)
                    seen[key] += 1
                    uid = checkpoint_id(f"{key}|{seen[key]}")
                    entries[uid] = entry
                    refs.append(
                        message_ref(
                            folder=folder.name,
                            uidvalidity=uidvalidity,
                            uid=uid,
                            size=entry.size,
                            stamp=entry.from_date,
                            head=head,
                            flags=mbox.status_flags(head),
                            now=now,
                        )
                    )
            except mbox.NotAnMbox as exc:
                raise PermanentError(f"{what}: {file}: {exc}") from None
        self._indexed[folder.name] = _Indexed(file, stamp, entries)
        return refs

    # -- fetching ------------------------------------------------------------------------

    def _read(self, ref: MessageRef, limit: int | None) -> bytes | None:
        """The message as read (escaping undone), or its start (about `limit` bytes)."""
        indexed = self._indexed.get(ref.folder)
        entry = indexed.entries.get(ref.uid) if indexed is not None else None
        if indexed is None or entry is None:
            return None
        what = f"{self._what}, folder {ref.folder!r}"
        with os_errors(what):
            handle = self._handles.get(ref.folder)
            if handle is None:
                handle = self._handles[ref.folder] = open(indexed.file, "rb")  # noqa: SIM115
            if _stamp(os.fstat(handle.fileno())) != indexed.stamp:
                raise TransientError(f"{what}: the file changed since it was listed; listing again")
            handle.seek(entry.start)
            length = entry.end - entry.start
            raw = handle.read(length if limit is None else min(limit, length))
        if len(raw) < (length if limit is None else min(limit, length)):
            raise TransientError(f"{what}: the file is shorter than when it was listed")
        return mbox.unescape(raw, self._format)

    def session(self) -> MboxSource:
        # Another reader of the same listing, with files of its own: it reads beside this
        # one (the listing is not changed once made).
        other = MboxSource(self._job, self._settings)
        other._files, other._indexed = self._files, self._indexed
        return other

    def close(self) -> None:
        handles, self._handles = self._handles, {}
        for handle in handles.values():
            handle.close()

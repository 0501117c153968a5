"""MaildirSource: a Maildir tree below --source-root, read as a MailboxSource.

Each message's checkpoint id comes from the unique part of its file name, which stays
when a client renames the file to change its flags, so checkpoints hold across runs and
renames; each folder has one fixed UIDVALIDITY.  Its date is the file's mtime, which
Dovecot and other Maildir servers keep as the arrival time (see refs.arrival for one
that is absurd).  Nothing is ever written.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from migrator.connectors.local import maildir
from migrator.connectors.local.paths import checked
from migrator.connectors.local.refs import (
    HEAD_BYTES,
    FileReads,
    checkpoint_id,
    describe,
    folder_uidvalidity,
    header_block,
    message_ref,
    os_errors,
    unique_name,
)
from migrator.connectors.local.settings import LocalSettings
from migrator.errors import PermanentError
from migrator.model import MailboxJob
from migrator.plan import MessageRef
from migrator.sources.base import SourceFolder

KIND = "maildir"


class _Listed:
    """What a listing learnt, shared (read only once listed) by the sessions of one
    source: each folder's directory, and each message's file and unique part."""

    def __init__(self) -> None:
        self.directories: dict[str, str] = {}  # folder name -> its directory
        self.files: dict[tuple[str, str], tuple[str, str]] = {}  # (folder, uid) -> (path, unique)


class MaildirSource(FileReads):
    def __init__(self, job: MailboxJob, settings: LocalSettings) -> None:
        self._job, self._settings = job, settings
        self._what = describe(job)
        self._path = checked(settings.root, job.source_server.host, what=self._what)
        if not os.path.isdir(self._path):
            raise PermanentError(
                f"{self._what}: {self._path} is not a directory, and a Maildir is one "
                "(an mbox file is read with --source-type mbox)"
            )
        self._listed = _Listed()
        # Folder -> unique part -> file, as a second look found them: once per folder and
        # session, so files renamed in bulk cost one directory read, not one each.
        self._looked_again: dict[str, dict[str, str]] = {}

    # -- listing -------------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        with os_errors(self._what):
            found = maildir.find_folders(self._path)
        if not found:
            raise PermanentError(
                f"{self._what}: {self._path} is not a Maildir: no cur/ or new/ in it, nor "
                "in a folder below it"
            )
        folders = []
        directories: dict[str, str] = {}
        for folder in found:
            name = unique_name("/".join(folder.path), directories)
            directories[name] = folder.directory
            folders.append(SourceFolder(name=name, path=folder.path))
        self._listed.directories, self._listed.files = directories, {}
        self._looked_again = {}
        return folders

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        directory = self._listed.directories[folder.name]
        what = f"{self._what}, folder {folder.name!r}"
        now = datetime.now(UTC)
        uidvalidity = folder_uidvalidity(KIND, folder.name)
        refs = []
        with os_errors(what):
            keywords = maildir.read_keywords(directory)
            for unique, (sub, entry) in maildir.message_files(directory).items():
                try:
                    status = entry.stat(follow_symlinks=False)
                    head = _read_start(entry.path)
                except FileNotFoundError:
                    continue  # expunged, or renamed, since the directory was read: next pass
                _, flags = maildir.parse_name(entry.name, keywords)
                uid = checkpoint_id(unique)
                self._listed.files[(folder.name, uid)] = (entry.path, unique)
                refs.append(
                    message_ref(
                        folder=folder.name,
                        uidvalidity=uidvalidity,
                        uid=uid,
                        size=status.st_size,
                        stamp=datetime.fromtimestamp(int(status.st_mtime), UTC),
                        head=header_block(head) or head,
                        flags=maildir.flags_in(sub, flags),
                        now=now,
                    )
                )
        return refs

    # -- fetching ------------------------------------------------------------------------

    def _read(self, ref: MessageRef, limit: int | None) -> bytes | None:
        """The message's bytes (the first `limit` of them), or None where it is gone:
        expunged since the listing (no loss), or renamed twice since (the copier names it
        and lists again).  A file a client renamed since (another flag) is found again
        by its unique part."""
        listed = self._listed.files.get((ref.folder, ref.uid))
        if listed is None:
            return None
        path, unique = listed
        with os_errors(f"{self._what}, folder {ref.folder!r}"):
            data = _read_file(path, limit)
            if data is None:
                if ref.folder not in self._looked_again:
                    found = maildir.message_files(self._listed.directories[ref.folder])
                    self._looked_again[ref.folder] = {u: e.path for u, (_, e) in found.items()}
                again = self._looked_again[ref.folder].get(unique)
                data = _read_file(again, limit) if again is not None else None
        return data

    def session(self) -> MaildirSource:
        # Files are read with no state of a connection: another reader of the same
        # listing reads alike, beside this one (the listing is not changed once made).
        other = MaildirSource(self._job, self._settings)
        other._listed = self._listed
        return other

    def close(self) -> None:
        return None


def _read_start(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(HEAD_BYTES)


def _read_file(path: str, limit: int | None) -> bytes | None:
    """The file's bytes (its first `limit`), or None where it is not there (any more)."""
    try:
        with open(path, "rb") as handle:
            return handle.read() if limit is None else handle.read(limit)
    except FileNotFoundError:
        return None

"""The IMAP source's hooks for incremental passes (sources.base.IncrementalSource and
ChangesTogether): each folder's state, and what changed in it since a pass read it, every
folder that moved read at once (changes.changes_together) or one alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient

from migrator.connectors.imap.changes import (
    all_states,
    changes_together,
    folder_state,
    list_with_states,
    older_changes,
)
from migrator.connectors.imap.connection import fetch_all, imap_errors
from migrator.connectors.imap.listing import FIELDS_ITEM, LISTING_ITEMS, Listed
from migrator.plan import MessageRef
from migrator.sources.base import SourceFolder
from migrator.syncstate import FolderChanges, FolderState


class ImapSourceSync:
    """Mixed into ImapSource, whose connection and listing these use."""

    _client: IMAPClient
    _what: str
    _selected: str | None
    _listed: dict[str, FolderState]
    _states: dict[str, FolderState] | None  # LIST-STATUS, read once
    _modseqs: bool
    _qresync: bool

    if TYPE_CHECKING:  # ImapSource's own

        def _select(self, name: str) -> dict[bytes, Any]: ...
        def list_folders(self, *, with_states: bool = False) -> list[SourceFolder]: ...
        def _refs(
            self, folder: SourceFolder, uidvalidity: int, listed: dict[int, Listed], what: str
        ) -> list[MessageRef]: ...

    def listed_state(self, name: str) -> FolderState | None:
        return self._listed.get(name)

    def folder_state(self, folder: SourceFolder) -> FolderState:
        return folder_state(self._select(folder.name))

    def changes(self, folder: SourceFolder, since: FolderState) -> FolderChanges | None:
        what = f"{self._what}, folder {folder.name!r}"
        if self._unmoved(since, folder.name):
            return FolderChanges(since)
        state = folder_state(self._select(folder.name))
        if state.uidvalidity != since.uidvalidity:
            return None
        new: list[MessageRef] = []
        if state.uidnext > since.uidnext:
            with imap_errors(what):
                listed = fetch_all(
                    self._client, LISTING_ITEMS, FIELDS_ITEM, uids=f"{since.uidnext}:*"
                )
            above = {uid: m for uid, m in listed.items() if uid >= since.uidnext}
            new = self._refs(folder, state.uidvalidity, above, what)
        with imap_errors(what):
            return older_changes(self._client, state, since, new, qresync=self._qresync)

    def changes_of(
        self, asked: Sequence[tuple[SourceFolder, FolderState]]
    ) -> list[FolderChanges | None]:
        """changes() of each (folder, since), those of the folders that moved read together:
        their commands written before any answer is read (changes.changes_together)."""
        moved = [(f, since) for f, since in asked if not self._unmoved(since, f.name)]
        read = changes_together(
            self._client, [(f.name, s) for f, s in moved], qresync=self._qresync, what=self._what
        )
        if moved:
            self._selected = None  # whichever it is: the next read selects its folder
        found: dict[str, FolderChanges | None] = {}
        for (folder, since), got in zip(moved, read, strict=True):
            if got.alone:
                found[folder.name] = self.changes(folder, since)
            elif got.changes is not None:
                what = f"{self._what}, folder {folder.name!r}"
                new = self._refs(folder, got.changes.state.uidvalidity, got.listed, what)
                found[folder.name] = replace(got.changes, new=new)
            else:
                found[folder.name] = None
        return [found.get(f.name, FolderChanges(since)) for f, since in asked]

    def list_folders_with_states(self) -> list[SourceFolder]:
        """list_folders, every folder's state (for `changes_of`) read in the same round
        trip where mod-sequences are on and the server has LIST-STATUS."""
        return self.list_folders(with_states=True)

    def _list(self, with_states: bool) -> list[Any]:
        """LIST, as imapclient's list_folders gives it; `with_states`, where it can, with
        LIST-STATUS written beside it, the states kept for `_unmoved`."""
        read_states = with_states and self._states is None and self._modseqs
        if read_states and self._client.has_capability("LIST-STATUS"):
            listed, self._states = list_with_states(self._client, self._what)
            return listed
        folders: list[Any] = self._client.list_folders()
        return folders

    def _unmoved(self, since: FolderState, name: str) -> bool:
        """Whether one LIST-STATUS for every folder says `name` has not moved since."""
        if self._states is None:
            self._states = all_states(self._client, self._what) if self._modseqs else {}
        return since.modseq is not None and self._states.get(name) == since

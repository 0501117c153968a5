"""The EWS target's hooks for incremental passes (targets.base.SyncTarget): the read state
and the flag of each copy the ledger knows, by its ItemId (UpdateItem, AlwaysOverwrite),
and copies removed (DeleteItem, to the Deleted Items' dumpster: SoftDelete).  Exchange
keeps no UIDNEXT, so no mark (every index is whole), and a folder renamed at the source
keeps its copies where they are (new mail goes to the new name)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from exchangelib import Message
from exchangelib.items import ALWAYS_OVERWRITE, SAVE_ONLY, SOFT_DELETE

from migrator.connectors.ews.props import FLAG_STATUS_FLAGGED
from migrator.foldermap import TargetFolder
from migrator.recognition import TargetCopy
from migrator.syncstate import Placement

T = TypeVar("T")

# Items per UpdateItem or DeleteItem call.
CHANGE_BATCH = 100


class EwsSyncHooks:
    """Mixed into EwsTarget, whose account and error translation these use."""

    _account: Any
    _what: str

    if TYPE_CHECKING:  # EwsTarget's own

        def _call(self, what: str, call: Callable[[], T]) -> T: ...

    def set_flags(self, changes: Sequence[tuple[Placement, tuple[str, ...]]]) -> int:
        changed = 0
        for start in range(0, len(changes), CHANGE_BATCH):
            chunk = changes[start : start + CHANGE_BATCH]
            items = [
                (self._flagged(p, flags), ["is_read", "migrator_flag_status"]) for p, flags in chunk
            ]

            def call(items: list[tuple[Any, list[str]]] = items) -> list[Any]:
                return list(
                    self._account.bulk_update(
                        items=items,
                        conflict_resolution=ALWAYS_OVERWRITE,
                        message_disposition=SAVE_ONLY,
                        suppress_read_receipts=True,
                    )
                )

            results = self._call(f"{self._what}: updating flags", call)
            changed += sum(1 for r in results if not isinstance(r, Exception))
        return changed

    def _flagged(self, placement: Placement, flags: tuple[str, ...]) -> Message:
        lowered = {f.lower() for f in flags}
        return Message(
            account=self._account,
            id=placement.id,
            changekey=None,
            is_read="\\seen" in lowered,
            migrator_flag_status=FLAG_STATUS_FLAGGED if "\\flagged" in lowered else None,
        )

    def remove(self, placements: Sequence[Placement]) -> int:
        removed = 0
        for start in range(0, len(placements), CHANGE_BATCH):
            ids = [(p.id, None) for p in placements[start : start + CHANGE_BATCH]]

            def call(ids: list[tuple[str, None]] = ids) -> list[Any]:
                return list(
                    self._account.bulk_delete(
                        ids=ids, delete_type=SOFT_DELETE, suppress_read_receipts=True
                    )
                )

            results = self._call(f"{self._what}: removing copies", call)
            removed += sum(1 for r in results if r is True)
        return removed

    def rename_folder(self, old: str, new: TargetFolder) -> str | None:
        return None

    def mark(self, name: str) -> str | None:
        return None

    def index_since(self, name: str, mark: str) -> list[TargetCopy] | None:
        return None

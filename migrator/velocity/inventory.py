"""Inventory CSV <-> InventoryRow values (pure: text in, values out).

    Identity,SizeBytes,Items:Inbox,Items:Sent Items,...,Group,QuotaBytes

Identity and SizeBytes are required; any number of `Items:<Folder>` columns give
item counts per target folder (an empty cell is 0); Group and QuotaBytes are
optional (an empty QuotaBytes means no quota known).  Column names are matched
case-insensitively; other columns are ignored.  As with batches, a bad row becomes
a BadBatchRow(line, column, problem) and never stops the others.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from migrator.csvtable import decode_csv_bytes, physical_rows
from migrator.errors import BadBatchRow, BatchError
from migrator.velocity.plan import InventoryRow

IDENTITY = "Identity"
SIZE_BYTES = "SizeBytes"
GROUP = "Group"
QUOTA_BYTES = "QuotaBytes"
ITEMS_PREFIX = "Items:"

_WHOLE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class InventoryResult:
    rows: tuple[InventoryRow, ...]
    problems: tuple[BadBatchRow, ...]


def parse_inventory(text: str) -> InventoryResult:
    """Rows and problems of an inventory CSV.  Raises BatchError if the file is not
    CSV or its header lacks Identity or SizeBytes."""
    rows_iter = physical_rows(text.removeprefix("\ufeff"))
    first = next(rows_iter, None)
    if first is None:
        raise BatchError(f"the file is empty; its first line must name {IDENTITY},{SIZE_BYTES}")
    header_line, header = first
    fixed: dict[str, int] = {}
    items: dict[str, int] = {}  # folder -> column index
    known = {name.lower(): name for name in (IDENTITY, SIZE_BYTES, GROUP, QUOTA_BYTES)}
    for index, cell in enumerate(header):
        name = cell.strip()
        if name.lower().startswith(ITEMS_PREFIX.lower()):
            folder = name[len(ITEMS_PREFIX) :].strip()
            if not folder or folder in items:
                raise BatchError(f"line {header_line}: column {name!r} is empty or repeated")
            items[folder] = index
        elif name.lower() in known:
            if known[name.lower()] in fixed:
                raise BatchError(f"line {header_line}: the header has column {name} twice")
            fixed[known[name.lower()]] = index
    missing = [c for c in (IDENTITY, SIZE_BYTES) if c not in fixed]
    if missing:
        raise BatchError(f"line {header_line}: the header has no column {', '.join(missing)}")

    rows: list[InventoryRow] = []
    problems: list[BadBatchRow] = []
    seen: dict[str, int] = {}
    for line, cells in rows_iter:
        row, found = _parse_row(line, cells, fixed, items, seen)
        if row is None:
            problems.extend(found)
        else:
            rows.append(row)
    return InventoryResult(tuple(rows), tuple(problems))


def _parse_row(
    line: int,
    cells: list[str],
    fixed: Mapping[str, int],
    items: Mapping[str, int],
    seen: dict[str, int],
) -> tuple[InventoryRow | None, list[BadBatchRow]]:
    found: list[BadBatchRow] = []

    def cell(index: int | None) -> str:
        return cells[index].strip() if index is not None and index < len(cells) else ""

    def number(column: str, text: str) -> int:
        if not _WHOLE.fullmatch(text):
            found.append(BadBatchRow(line, column, "is not a whole number of 0 or more"))
            return 0
        return int(text)

    identity = cell(fixed[IDENTITY])
    if not identity:
        found.append(BadBatchRow(line, IDENTITY, "is empty"))
    elif identity.lower() in seen:
        found.append(
            BadBatchRow(line, IDENTITY, f"the same identity is on line {seen[identity.lower()]}")
        )
    else:
        seen[identity.lower()] = line
    size = number(SIZE_BYTES, cell(fixed[SIZE_BYTES]))
    counts = {
        folder: number(ITEMS_PREFIX + folder, cell(index) or "0") for folder, index in items.items()
    }
    quota_text = cell(fixed.get(QUOTA_BYTES))
    quota = number(QUOTA_BYTES, quota_text) if quota_text else None
    if found:
        return None, found
    row = InventoryRow(
        identity=identity,
        size_bytes=size,
        items=counts,
        group=cell(fixed.get(GROUP)),
        quota_bytes=quota,
        line=line,
    )
    return row, found


def read_inventory_file(path: str | Path) -> InventoryResult:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BatchError(f"{path}: cannot be read: {exc.strerror}") from exc
    text = decode_csv_bytes(data, what=str(path))
    try:
        return parse_inventory(text)
    except BatchError as exc:
        raise BatchError(f"{path}: {exc}") from exc


def format_inventory(rows: Sequence[InventoryRow]) -> str:
    """The CSV text of `rows`: one Items: column per folder, in order of first appearance."""
    folders: dict[str, None] = {}
    for row in rows:
        folders.update(dict.fromkeys(row.items))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(
        [IDENTITY, SIZE_BYTES, *(ITEMS_PREFIX + f for f in folders), GROUP, QUOTA_BYTES]
    )
    for row in rows:
        writer.writerow(
            [
                row.identity,
                row.size_bytes,
                *(row.items.get(f, 0) for f in folders),
                row.group,
                "" if row.quota_bytes is None else row.quota_bytes,
            ]
        )
    return out.getvalue()

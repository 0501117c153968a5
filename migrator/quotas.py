"""The activation CSV (Identity, SubscriptionIds, UserLocation, MailboxQuotaSize in
bytes) -> each target mailbox's quota; every row it cannot use becomes a BadBatchRow."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from migrator.csvtable import Row, open_table, read_text, show
from migrator.errors import BadBatchRow, BatchError

QUOTA_COLUMNS = ("Identity", "SubscriptionIds", "UserLocation", "MailboxQuotaSize")
QUOTA_REQUIRED = ("Identity", "MailboxQuotaSize")

_WHOLE_NUMBER = re.compile(r"-?[0-9]+")  # int() alone accepts "1_000", " +5" and other digits
_INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class QuotaResult:
    quotas: Mapping[str, int]  # lower-cased Identity -> MailboxQuotaSize in bytes
    problems: tuple[BadBatchRow, ...]


def parse_quotas(text: str) -> QuotaResult:
    """Parse an activation CSV: lower-cased Identity -> MailboxQuotaSize (Int64 bytes).

    Rows with an empty cell, a value that is not a whole number of bytes, a negative
    or over-Int64 value, or an Identity seen before become problems.
    """
    columns, width, rows = open_table(text, QUOTA_COLUMNS, QUOTA_REQUIRED)
    quotas: dict[str, int] = {}
    first_line: dict[str, int] = {}
    problems: list[BadBatchRow] = []
    for line, cells in rows:
        row = Row(line, cells, columns, width)
        if row.shifted:
            problems.extend(row.problems.values())
            continue
        identity = row.required("Identity")
        row.first_seen(first_line, "Identity", identity)
        size_text = row.required("MailboxQuotaSize")
        size = 0
        if size_text and row.ok("MailboxQuotaSize"):
            if not _WHOLE_NUMBER.fullmatch(size_text):
                row.report("MailboxQuotaSize", f"{show(size_text)} is not a whole number of bytes")
            else:
                size = int(size_text)
                if size < 0:
                    row.report("MailboxQuotaSize", f"{size} is negative")
                elif size > _INT64_MAX:
                    row.report("MailboxQuotaSize", f"{size} is larger than Int64 allows")
        if row.problems:
            problems.extend(row.problems.values())
        else:
            quotas[identity.lower()] = size
    return QuotaResult(quotas=MappingProxyType(quotas), problems=tuple(problems))


def read_quota_file(path: str | Path) -> QuotaResult:
    """Read, decode and parse an activation CSV file; file-level BatchErrors name the path."""
    text = read_text(path)
    try:
        return parse_quotas(text)
    except BatchError as exc:
        raise BatchError(f"{path}: {exc}") from exc

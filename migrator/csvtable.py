"""Reading the CSV files operators bring (batches, quotas, inventories, address maps):
strict UTF-8, rows with the physical line they start on, one problem per cell, and cells
checked for control characters.  Problem messages never quote a cell whole."""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

from migrator.errors import BadBatchRow, BatchError

CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# Spreadsheets run a cell starting with one of these as a formula (CSV injection).
FORMULA_START = ("=", "+", "-", "@")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def decode_csv_bytes(data: bytes, *, what: str) -> str:
    """Decode a CSV file as strict UTF-8, with or without the BOM Excel writes.

    Raises BatchError naming `what` and the line of the first byte that is not UTF-8.
    """
    body = data.removeprefix(codecs.BOM_UTF8)
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = exc.start
    # Counted like the csv module counts (\r\n, \r, \n) so line numbers agree with rows.
    line = len(_LINE_BREAK.findall(body, 0, start)) + 1
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        hint = "it looks like UTF-16 ('Unicode text'); save it as 'CSV UTF-8'"
    else:
        hint = "save it as 'CSV UTF-8 (comma delimited)'"
    # Raised outside the except block: the UnicodeDecodeError holds the whole file,
    # passwords included, and must not ride along as __context__ into a traceback.
    raise BatchError(f"{what} is not UTF-8: line {line} has the byte 0x{body[start]:02X}; {hint}")


def read_text(path: str | Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BatchError(f"{path}: cannot be read: {exc.strerror}") from exc
    return decode_csv_bytes(data, what=str(path))


class Row:
    """The trimmed cells of one row, and at most one problem per column."""

    def __init__(self, line: int, cells: list[str], columns: Mapping[str, int], width: int):
        self.line = line
        self.problems: dict[str, BadBatchRow] = {}
        self._values: dict[str, str] = {}
        # Cells of a row longer than the header have shifted: checking them would mislead
        # and could quote the password, which may now sit under any column.
        self.shifted = len(cells) > width and bool("".join(cells[width:]).strip())
        if self.shifted:
            self.report(
                str(width + 1),
                f"the row has {len(cells)} cells but the header {width} columns "
                "(a comma in a cell that is not in quotes?)",
            )
            return
        # A row that stops before the header does: its last cells are missing, not empty.
        self._missing = {name for name, index in columns.items() if index >= len(cells)}
        self._short = f"is missing: the row has {len(cells)} cells but the header {width} columns"
        for name, index in columns.items():
            value = cells[index].strip() if index < len(cells) else ""
            control = CONTROL.search(value)
            if control is not None:
                self.report(name, f"contains the control character U+{ord(control[0]):04X}")
            self._values[name] = value

    def get(self, column: str) -> str:
        return self._values.get(column, "")

    def ok(self, column: str) -> bool:
        return column not in self.problems

    def report(self, column: str, problem: str | None) -> None:
        if problem is not None and column not in self.problems:
            self.problems[column] = BadBatchRow(self.line, column, problem)

    def required(self, column: str, why: str = "is empty") -> str:
        value = self.get(column)
        if not value:
            self.report(column, self._short if column in self._missing else why)
        return value

    def first_seen(self, seen: dict[str, int], column: str, value: str) -> bool:
        """Remember where `value` first appeared; report and return True if not here."""
        if not value:
            return False
        first = seen.setdefault(value.lower(), self.line)
        if first == self.line:
            return False
        self.report(column, f"the same address is already on line {first}")
        return True


def open_table(
    text: str, known: tuple[str, ...], required: tuple[str, ...]
) -> tuple[dict[str, int], int, Iterator[tuple[int, list[str]]]]:
    rows = physical_rows(text.removeprefix("\ufeff"))
    first = next(rows, None)
    if first is None:
        raise BatchError(f"the file is empty; its first line must name the columns: {required}")
    line, header = first
    by_lower = {name.lower(): name for name in known}
    columns: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = by_lower.get(cell.strip().lower())
        if name is None:
            continue  # other columns are allowed and ignored
        if name in columns:
            raise BatchError(f"line {line}: the header has column {name} twice")
        columns[name] = index
    missing = [name for name in required if name not in columns]
    if missing:
        hint = ""
        if len(header) == 1 and ";" in header[0]:
            hint = "; cells are separated by ';': save as 'CSV UTF-8 (comma delimited)'"
        raise BatchError(f"line {line}: the header has no column {', '.join(missing)}{hint}")
    return columns, len(header), rows


def physical_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """Non-empty rows with the physical line each starts on (quoted cells may hold newlines)."""
    # strict: a quote left open would otherwise swallow the rest of the file into one cell.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if "".join(cells).strip():
                yield line, cells
    except csv.Error as exc:
        raise BatchError(f"the row starting on line {start} is not valid CSV: {exc}") from exc


def show(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")

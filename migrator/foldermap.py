"""foldermap.xml -> FolderMap, mapping a source folder to a target folder, and making its
name one the target takes (pure).

A folder map names where source folders land on the target::

    <FolderMap>
      <Folder path="Spam"><Property SpecialFolder="Junk E-mail"/></Folder>
      <Folder path="Important Mail"><Property Name="Inbox/Important"/></Folder>
    </FolderMap>

`SpecialFolder` names one of Exchange's default folders; `Name` a folder path with "/"
between levels, whose first component, when it is a default folder's name (compared
case-insensitively), means that default folder.

The file is untrusted input.  Any DOCTYPE is refused before the parser sees the bytes, so
there are no entities, no DTD and no network; the parser is configured the same way
anyway, and the schema is read from disk by the same parser.  Nothing is read but the
file itself and config/foldermap.xsd.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import math
import re
import threading
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from lxml import etree

from migrator.errors import FolderMapError

# migrator/data/ holds links to config/foldermap.{xml,xsd}: one copy in the repository,
# and a wheel (which follows the links) carries both files as package data.
CONFIG_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MAP_PATH = CONFIG_DIR / "foldermap.xml"
SCHEMA_PATH = CONFIG_DIR / "foldermap.xsd"

MAX_BYTES = 1 << 20  # room for thousands of rules; anything larger is a mistake or an attack
MAX_DEPTH = 100  # nested XML elements; a valid map needs 3

_DOCTYPE = re.compile(rb"<!DOCTYPE")


# (str, Enum) as the rest of migrator has it; StrEnum would change str() and f-strings.
class SpecialFolder(str, enum.Enum):  # noqa: UP042
    """Exchange's default folders (EWS DistinguishedFolderId), by English display name."""

    INBOX = "Inbox"
    OUTBOX = "Outbox"
    SENT_ITEMS = "Sent Items"
    DRAFTS = "Drafts"
    DELETED_ITEMS = "Deleted Items"
    JUNK_EMAIL = "Junk E-mail"
    JOURNAL = "Journal"
    NOTES = "Notes"
    CALENDAR = "Calendar"


@dataclass(frozen=True)
class TargetFolder:
    """A folder on the target: a default folder and the path below it, or a custom path."""

    special: SpecialFolder | None  # the default folder at the top; None: subpath from the root
    subpath: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.special is None and not self.subpath:
            raise ValueError("a custom target folder needs at least one path component")

    def display(self) -> str:
        """The path as a person reads it: "Inbox/Important", "Sent Items", "Archive/2019"."""
        top = () if self.special is None else (self.special.value,)
        return "/".join(top + self.subpath)


@dataclass(frozen=True)
class FolderRule:
    """One <Folder>: source folders at `path` (and below) go to `target` (and below)."""

    path: tuple[str, ...]
    target: TargetFolder
    line: int | None = None  # where the rule is written, for messages


# RFC 6154 SPECIAL-USE: the flag a source server puts on a folder's LIST response.
# \All, \Flagged and \Important are virtual views of mail held elsewhere; not mapped here.
SPECIAL_USE_FOLDERS: Mapping[str, TargetFolder] = MappingProxyType(
    {
        "\\Sent": TargetFolder(SpecialFolder.SENT_ITEMS),
        "\\Junk": TargetFolder(SpecialFolder.JUNK_EMAIL),
        "\\Trash": TargetFolder(SpecialFolder.DELETED_ITEMS),
        "\\Drafts": TargetFolder(SpecialFolder.DRAFTS),
        "\\Archive": TargetFolder(None, ("Archive",)),
    }
)


def _key(name: str) -> str:
    # Caseless match; NFC first because clients differ in how they compose "é".
    return unicodedata.normalize("NFC", name).casefold()


def _path_key(path: Sequence[str]) -> tuple[str, ...]:
    return tuple(_key(component) for component in path)


_SPECIAL_BY_KEY = {_key(special.value): special for special in SpecialFolder}
_SPECIAL_USE_BY_KEY = {_key(flag): target for flag, target in SPECIAL_USE_FOLDERS.items()}


@dataclass(frozen=True)
class FolderMap:
    """The rules of a folder map, and where each source folder goes."""

    rules: tuple[FolderRule, ...]
    _by_path: Mapping[tuple[str, ...], FolderRule] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_path: dict[tuple[str, ...], FolderRule] = {}
        for rule in self.rules:
            key = _path_key(rule.path)
            if key in by_path:
                raise ValueError(f"two rules for source folder {'/'.join(rule.path)!r}")
            by_path[key] = rule
        object.__setattr__(self, "_by_path", MappingProxyType(by_path))

    def map(self, source_path: Sequence[str], special_use: Iterable[str] = ()) -> TargetFolder:
        """Where the source folder `source_path` (split, decoded components) goes.

        1. The rule with the longest path that equals the first components of
           `source_path` (case-insensitively); the remaining components follow below
           the rule's target.
        2. Else the folder's own RFC 6154 SPECIAL-USE flags (`special_use`, such as
           "\\Sent"; case-insensitive; other flags ignored).  They describe only the
           flagged folder: its children are not mapped by this step, since a server
           flags each folder it means, and a child of \\Sent is reported on its own.
        3. Else the same path at the target's root, except that a first component
           "INBOX" in any case is always the Inbox (RFC 3501 5.1: INBOX is
           case-insensitive).
        """
        source = tuple(source_path)
        if not source:
            raise ValueError("source_path is empty")
        key = _path_key(source)
        for length in range(len(source), 0, -1):
            rule = self._by_path.get(key[:length])
            if rule is not None:
                return TargetFolder(rule.target.special, rule.target.subpath + source[length:])
        if isinstance(special_use, str):  # one flag given bare instead of in a tuple
            special_use = (special_use,)
        flags = {_key(flag) for flag in special_use}
        for flag, target in _SPECIAL_USE_BY_KEY.items():  # fixed order, whatever the server's
            if flag in flags:
                return target
        if key[0] == "inbox":
            return TargetFolder(SpecialFolder.INBOX, source[1:])
        return TargetFolder(None, source)


# -- target folder names ----------------------------------------------------------------
#
# Sources name folders in ways a target refuses: its hierarchy delimiter inside a name
# (Exchange allows "/"), "." or "..", a leading "~" (Dovecot), control characters, names
# and depths past its limits.  Dovecot 2.3, for one, refuses a level over 255 octets and,
# on a plain filesystem, a whole name near 4,000; Exchange takes depths of about 300.

MAX_LEVELS = 64  # levels below the target's top folder; deeper ones fold into the last
MAX_LEVEL_OCTETS = 200  # one level's name, as the target stores it (UTF-8 or modified UTF-7)
MAX_PATH_OCTETS = 1000  # all levels and their delimiters

_JOIN = "%%"  # between levels folded into one
_EMPTY = "%-"  # a level with no name
_CUT = "%#"  # a name cut to fit, followed by a digest of the whole
_DIGEST_HEX = 20  # 80 bits
_HEX = frozenset("0123456789abcdefABCDEF")
_TOKEN = re.compile(r"%(?:[0-9A-F]{2}|.)|.", re.DOTALL)  # a mark, or a "%" with what follows


def safe_subpath(
    path: Sequence[str],
    delimiter: str,
    *,
    max_levels: int = MAX_LEVELS,
    max_level_octets: int = MAX_LEVEL_OCTETS,
    max_path_octets: int = MAX_PATH_OCTETS,
) -> tuple[str, ...]:
    """The levels of a target folder path for the source levels `path`, each one a name the
    target takes, so that no folder is refused for its name alone.

    Deterministic (a rerun maps a folder where the last run did, so resume works) and
    collision-free: two different paths never give the same levels.  Within the limits
    it is reversible, like percent-encoding.  The marks:

    - `%XX`, an octet of the name's UTF-8, for the delimiter, control characters, a
      leading "~", each dot of a "." or ".." level, and a "%" that ends a name or would
      otherwise read as a mark (any other "%" stays as it is);
    - `%%` between levels folded into one: those past `max_levels`, or as many of the
      last as it takes to keep the whole path within `max_path_octets`;
    - `%-` for a level with no name;
    - `%#` and a digest of the whole name, ending a name cut to `max_level_octets` (cut
      names differ wherever the whole names did, but for a digest collision).
    """
    if not path:
        raise ValueError("path is empty")
    if len(delimiter) != 1:
        raise ValueError(f"delimiter {delimiter!r} is not one character")
    if max_levels < 1 or max_level_octets < 2 * (len(_CUT) + _DIGEST_HEX):
        raise ValueError("limits too small to name a folder")
    if max_path_octets < max_level_octets:
        raise ValueError("max_path_octets is below max_level_octets")
    escaped = [_escaped(level, delimiter) for level in path]
    for levels in range(min(len(escaped), max_levels), 0, -1):
        parts = [_capped(name, max_level_octets) for name in escaped[: levels - 1]]
        parts.append(_capped(_JOIN.join(escaped[levels - 1 :]), max_level_octets))
        if _octets(delimiter.join(parts)) <= max_path_octets:
            return tuple(parts)
    raise AssertionError("unreachable: one level always fits")  # pragma: no cover


def _escaped(name: str, delimiter: str) -> str:
    if not name:
        return _EMPTY
    if name in (".", ".."):
        return "%2E" * len(name)  # RFC 3501 leaves them to the server; file systems refuse
    out = []
    for index, char in enumerate(name):
        if (
            char == delimiter
            or unicodedata.category(char) in ("Cc", "Cs")  # controls; lone surrogates
            or (char == "~" and index == 0)  # Dovecot: a home directory
            or (char == "%" and _reads_as_mark(name, index))
        ):
            out.append("".join(f"%{octet:02X}" for octet in char.encode("utf-8", "surrogatepass")))
        else:
            out.append(char)
    return "".join(out)


def _reads_as_mark(name: str, index: int) -> bool:
    after = name[index + 1 : index + 3]
    return len(after) == 0 or after[0] in "%#-" or (len(after) == 2 and set(after) <= _HEX)


def _capped(name: str, limit: int) -> str:
    if _octets(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGEST_HEX]
    tail = _CUT + digest
    kept = ""
    for token in _TOKEN.findall(name):  # never cut inside an escape
        if _octets(kept + token) + len(tail) > limit:
            break
        kept += token
    return kept + tail


def _octets(name: str) -> int:
    """The longer of the name's UTF-8 and modified UTF-7 (RFC 3501 5.1.3) forms: a server
    limits whichever it stores (Dovecot: modified UTF-7 unless told otherwise)."""
    utf7, run = 0, 0  # run: UTF-16 units of non-printable-ASCII waiting to be base64ed
    for char in name:
        if " " <= char <= "~":
            utf7 += (2 + math.ceil(run * 16 / 6) if run else 0) + (2 if char == "&" else 1)
            run = 0
        else:
            run += 2 if ord(char) > 0xFFFF else 1
    utf7 += 2 + math.ceil(run * 16 / 6) if run else 0
    return max(utf7, len(name.encode("utf-8", "surrogatepass")))


def load_folder_map(path: str | Path) -> FolderMap:
    """Read and check a foldermap.xml; raises FolderMapError naming the file and line."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as exc:
        raise FolderMapError(str(path), None, f"cannot read: {exc.strerror}") from exc
    return parse_folder_map(data, source=str(path))


# libxml2 builds its XSD built-in types on first use without a lock: two threads parsing
# a schema at once can fail with "Internal error: xmlSchemaPValAttrNodeValue" (seen with
# the mailboxes of `migrator run` starting together).  One map is read at a time.
_XML_LOCK = threading.Lock()


def parse_folder_map(data: bytes, *, source: str = "<memory>") -> FolderMap:
    """Parse and check foldermap.xml content; `source` names it in FolderMapError."""
    with _XML_LOCK:
        return _parse_folder_map(data, source)


def _parse_folder_map(data: bytes, source: str) -> FolderMap:
    if len(data) > MAX_BYTES:
        raise FolderMapError(source, None, f"larger than {MAX_BYTES} bytes")
    root = _parse_untrusted(data, source)
    _check_depth(root, source)
    schema = _schema()
    if not schema.validate(root):
        error: Any = schema.error_log[0]  # type: ignore[index]  # lxml-stubs: _ErrorLog is bare
        raise FolderMapError(source, error.line, f"not a valid folder map: {error.message}")
    rules: list[FolderRule] = []
    seen: dict[tuple[str, ...], int | None] = {}
    for folder in root.iterchildren("Folder"):
        line = _line(folder)
        rule_path = _split(folder.get("path", ""), "path", source, line)
        key = _path_key(rule_path)
        if key in seen:
            problem = f"path {'/'.join(rule_path)!r} repeats line {seen[key]}"
            raise FolderMapError(source, line, problem)
        seen[key] = line
        rules.append(FolderRule(rule_path, _target(folder, source), line))
    return FolderMap(tuple(rules))


@functools.lru_cache(maxsize=1)
def default_folder_map() -> FolderMap:
    """The map shipped in config/foldermap.xml (read once per process)."""
    return load_folder_map(DEFAULT_MAP_PATH)


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )


def _line(element: etree._Element) -> int | None:
    line: int | None = element.sourceline  # type: ignore[assignment]  # lxml-stubs: untyped
    return line


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def _parse_untrusted(data: bytes, source: str) -> etree._Element:
    # Refused on sight, even inside a comment: a folder map never needs one, and the
    # parser then never sees entity declarations (billion laughs) or DTD references.
    doctype = _DOCTYPE.search(data)
    if doctype is not None:
        line = _line_of(data, doctype.start())
        raise FolderMapError(source, line, "DOCTYPE not allowed (no DTD, no entities)")
    try:
        root = etree.fromstring(data, _safe_parser())
    except etree.XMLSyntaxError as exc:
        raise FolderMapError(source, exc.lineno, f"not well-formed XML: {exc.msg}") from exc
    # An encoding the byte scan cannot see (UTF-16): the parser read nothing, but refuse.
    docinfo = root.getroottree().docinfo
    if docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise FolderMapError(source, None, "DOCTYPE not allowed (no DTD, no entities)")
    return root


def _check_depth(root: etree._Element, source: str) -> None:
    depth = 0
    for event, element in etree.iterwalk(root, events=("start", "end")):
        depth += 1 if event == "start" else -1
        if depth > MAX_DEPTH:
            line = _line(element)
            raise FolderMapError(source, line, f"elements nested deeper than {MAX_DEPTH}")


def _schema() -> etree.XMLSchema:
    try:
        document = etree.fromstring(SCHEMA_PATH.read_bytes(), _safe_parser())
        return etree.XMLSchema(document)
    except OSError as exc:
        raise FolderMapError(str(SCHEMA_PATH), None, f"cannot read: {exc.strerror}") from exc
    except (etree.XMLSyntaxError, etree.XMLSchemaParseError) as exc:
        raise FolderMapError(str(SCHEMA_PATH), None, f"broken schema: {exc}") from exc


def _split(value: str, attribute: str, source: str, line: int | None) -> tuple[str, ...]:
    """A "/"-separated path attribute as components; refuses paths that name nothing."""

    def bad(problem: str) -> FolderMapError:
        return FolderMapError(source, line, f"{attribute} {value!r}: {problem}")

    if any(unicodedata.category(char) == "Cc" for char in value):
        raise bad("control character")
    if value.startswith("/"):
        raise bad('leading "/"')
    components = tuple(value.split("/"))
    if "" in components:
        raise bad('empty component ("//" or a trailing "/")')
    if "." in components or ".." in components:
        raise bad('"." or ".." component')
    return components


def _target(folder: etree._Element, source: str) -> TargetFolder:
    prop = folder.find("Property")
    assert prop is not None  # the schema requires exactly one
    special, name = prop.get("SpecialFolder"), prop.get("Name")
    if (special is None) == (name is None):
        problem = "Property needs exactly one of SpecialFolder and Name"
        raise FolderMapError(source, _line(prop), problem)
    if special is not None:
        return TargetFolder(SpecialFolder(special))  # the schema allows only the nine names
    assert name is not None
    components = _split(name, "Name", source, _line(prop))
    top = _SPECIAL_BY_KEY.get(_key(components[0]))
    if top is None:
        return TargetFolder(None, components)
    return TargetFolder(top, components[1:])

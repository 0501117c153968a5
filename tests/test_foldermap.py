"""Specifications of migrator.foldermap: the folder map file and where each folder goes."""

from __future__ import annotations

import itertools
import os
import re
import socket
import threading
import time
import unicodedata
from pathlib import Path

import pytest
from imapclient import imap_utf7

from migrator.errors import FolderMapError
from migrator.foldermap import (
    SPECIAL_USE_FOLDERS,
    FolderMap,
    FolderRule,
    SpecialFolder,
    TargetFolder,
    default_folder_map,
    load_folder_map,
    parse_folder_map,
    safe_subpath,
)

DATA = Path(__file__).parent / "data" / "foldermap"
REPO = Path(__file__).resolve().parent.parent
SECRET = "s3cr3t-d0-n0t-l3ak"

INBOX = SpecialFolder.INBOX
SENT = SpecialFolder.SENT_ITEMS
JUNK = SpecialFolder.JUNK_EMAIL
TRASH = SpecialFolder.DELETED_ITEMS
DRAFTS = SpecialFolder.DRAFTS


def wrap(*folders: str) -> bytes:
    body = "\n".join(folders)
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<FolderMap>\n{body}\n</FolderMap>\n'.encode()


# --- the shipped map -------------------------------------------------------------------------


def test_shipped_map_validates_against_its_schema() -> None:
    folder_map = load_folder_map(REPO / "config" / "foldermap.xml")
    assert len(folder_map.rules) == 10
    assert default_folder_map() == folder_map


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("Spam",), TargetFolder(JUNK)),
        (("Junk",), TargetFolder(JUNK)),
        (("Bulk Mail",), TargetFolder(JUNK)),
        (("Sent",), TargetFolder(SENT)),
        (("Sent Messages",), TargetFolder(SENT)),
        (("Sent Mail",), TargetFolder(SENT)),
        (("Trash",), TargetFolder(TRASH)),
        (("Deleted Messages",), TargetFolder(TRASH)),
        (("Drafts",), TargetFolder(DRAFTS)),
        (("INBOX",), TargetFolder(INBOX)),
    ],
)
def test_each_default_rule(source: tuple[str, ...], expected: TargetFolder) -> None:
    assert default_folder_map().map(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("inbox",), TargetFolder(INBOX)),
        (("Inbox",), TargetFolder(INBOX)),
        (("SPAM",), TargetFolder(JUNK)),
        (("sent messages",), TargetFolder(SENT)),
        (("bulk MAIL",), TargetFolder(JUNK)),
        (("TRASH", "Old"), TargetFolder(TRASH, ("Old",))),
    ],
)
def test_rules_match_case_insensitively(source: tuple[str, ...], expected: TargetFolder) -> None:
    assert default_folder_map().map(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("INBOX", "Projects"), TargetFolder(INBOX, ("Projects",))),
        (("Sent", "2019"), TargetFolder(SENT, ("2019",))),
        (("Trash", "a", "b"), TargetFolder(TRASH, ("a", "b"))),
    ],
)
def test_children_follow_their_mapped_parent(
    source: tuple[str, ...], expected: TargetFolder
) -> None:
    assert default_folder_map().map(source) == expected


def test_children_keep_their_own_spelling() -> None:
    assert default_folder_map().map(("sent", "MiXeD")) == TargetFolder(SENT, ("MiXeD",))


def test_a_rule_matches_whole_components_only() -> None:
    assert default_folder_map().map(("Sentimental",)) == TargetFolder(None, ("Sentimental",))
    assert default_folder_map().map(("Spam Filter",)) == TargetFolder(None, ("Spam Filter",))


# --- a site map --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def custom() -> FolderMap:
    return load_folder_map(DATA / "custom.xml")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("Archive",), TargetFolder(None, ("Old Mail",))),
        (("Archive", "2018"), TargetFolder(None, ("Old Mail", "2018"))),
        (("Archive", "2019"), TargetFolder(None, ("Archive 2019",))),
        (("archive", "2019", "Q1"), TargetFolder(None, ("Archive 2019", "Q1"))),
        (("INBOX", "Spam"), TargetFolder(JUNK)),
        (("INBOX", "Spam", "old"), TargetFolder(JUNK, ("old",))),
        (("INBOX", "Work"), TargetFolder(INBOX, ("Work",))),
    ],
)
def test_longest_matching_prefix_wins(
    custom: FolderMap, source: tuple[str, ...], expected: TargetFolder
) -> None:
    assert custom.map(source) == expected


@pytest.mark.parametrize("source", [("INBOX", "Spam"), ("Pourriel",), ("pourriel",)])
def test_several_sources_go_to_one_target(custom: FolderMap, source: tuple[str, ...]) -> None:
    assert custom.map(source) == TargetFolder(JUNK)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("Données",), TargetFolder(None, ("Ablage", "Données"))),
        (("DONNÉES", "été"), TargetFolder(None, ("Ablage", "Données", "été"))),
        # Decomposed "é", as some clients write it, still matches the rule.
        ((unicodedata.normalize("NFD", "Données"),), TargetFolder(None, ("Ablage", "Données"))),
        (("Éléments envoyés",), TargetFolder(SENT, ("Französisch",))),
        (("日本語", "メール"), TargetFolder(None, ("日本語", "メール"))),
    ],
)
def test_non_ascii_names(
    custom: FolderMap, source: tuple[str, ...], expected: TargetFolder
) -> None:
    assert custom.map(source) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Inbox/Important", TargetFolder(INBOX, ("Important",))),
        ("inbox/Important", TargetFolder(INBOX, ("Important",))),
        ("Junk E-mail", TargetFolder(JUNK)),
        ("Archive/2019", TargetFolder(None, ("Archive", "2019"))),
        ("Inboxes/x", TargetFolder(None, ("Inboxes", "x"))),
    ],
)
def test_a_name_under_a_default_folder_lands_in_it(name: str, expected: TargetFolder) -> None:
    folder_map = parse_folder_map(wrap(f'<Folder path="src"><Property Name="{name}"/></Folder>'))
    assert folder_map.rules[0].target == expected


# --- RFC 6154 SPECIAL-USE, then the same path ------------------------------------------------


@pytest.mark.parametrize(
    ("source", "flags", "expected"),
    [
        (("[Gmail]", "Sent Mail"), ["\\Sent"], TargetFolder(SENT)),
        (("Gesendet",), ["\\HasNoChildren", "\\sent"], TargetFolder(SENT)),
        (("Poubelle",), ["\\TRASH"], TargetFolder(TRASH)),
        (("Indésirables",), ["\\Junk"], TargetFolder(JUNK)),
        (("Entwürfe",), ["\\Drafts"], TargetFolder(DRAFTS)),
        (("Archiv",), ["\\Archive"], TargetFolder(None, ("Archive",))),
        (("Gesendet",), "\\Sent", TargetFolder(SENT)),
    ],
)
def test_special_use_flags_map_a_folder_without_a_rule(
    source: tuple[str, ...], flags: list[str] | str, expected: TargetFolder
) -> None:
    assert default_folder_map().map(source, flags) == expected


def test_a_rule_beats_special_use_flags() -> None:
    assert default_folder_map().map(("Trash",), ["\\Sent"]) == TargetFolder(TRASH)


def test_special_use_covers_the_flagged_folder_not_its_children() -> None:
    assert default_folder_map().map(("Gesendet", "2019")) == TargetFolder(
        None, ("Gesendet", "2019")
    )


@pytest.mark.parametrize(
    "flags", [["\\All"], ["\\Flagged"], ["\\Important"], ["Sent"], ["\\Noselect"], []]
)
def test_unmapped_or_bare_flags_fall_back_to_the_same_path(flags: list[str]) -> None:
    assert default_folder_map().map(("[Gmail]", "X"), flags) == TargetFolder(None, ("[Gmail]", "X"))


def test_special_use_table_names_the_rfc_6154_flags() -> None:
    assert set(SPECIAL_USE_FOLDERS) == {"\\Sent", "\\Junk", "\\Trash", "\\Drafts", "\\Archive"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (("Projects",), TargetFolder(None, ("Projects",))),
        (("Archive", "2019", "Q1"), TargetFolder(None, ("Archive", "2019", "Q1"))),
        (("iNbOx", "Work"), TargetFolder(INBOX, ("Work",))),
        (("INBOX",), TargetFolder(INBOX)),
    ],
)
def test_same_path_fallback_and_inbox_is_always_the_inbox(
    source: tuple[str, ...], expected: TargetFolder
) -> None:
    empty = FolderMap(())
    assert empty.map(source) == expected


def test_map_refuses_an_empty_source_path() -> None:
    with pytest.raises(ValueError, match="empty"):
        default_folder_map().map(())


@pytest.mark.parametrize(
    ("target", "text"),
    [
        (TargetFolder(INBOX, ("Important",)), "Inbox/Important"),
        (TargetFolder(SENT), "Sent Items"),
        (TargetFolder(None, ("Archive", "2019")), "Archive/2019"),
    ],
)
def test_display(target: TargetFolder, text: str) -> None:
    assert target.display() == text


def test_a_custom_target_needs_a_path() -> None:
    with pytest.raises(ValueError, match="component"):
        TargetFolder(None)


def test_a_map_built_in_code_refuses_duplicate_paths() -> None:
    rules = (FolderRule(("Spam",), TargetFolder(JUNK)), FolderRule(("SPAM",), TargetFolder(TRASH)))
    with pytest.raises(ValueError, match="two rules"):
        FolderMap(rules)


# --- invalid files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "line", "words"),
    [
        ("unknown_special_folder.xml", 4, "Junk Mail"),
        ("missing_path.xml", 5, "path"),
        ("two_properties.xml", 5, "Property"),
        ("syntax_error.xml", 5, "mismatch"),
        ("duplicate_path.xml", 5, "repeats line 3"),
    ],
)
def test_invalid_file_is_refused_with_its_line(file: str, line: int, words: str) -> None:
    with pytest.raises(FolderMapError) as caught:
        load_folder_map(DATA / file)
    assert caught.value.line == line
    assert f"{file}, line {line}:" in str(caught.value)
    assert words in str(caught.value)


@pytest.mark.parametrize(
    ("folder", "words"),
    [
        ('<Folder path="a"><Property Name="a//b"/></Folder>', "empty component"),
        ('<Folder path="a"><Property Name="a/"/></Folder>', "empty component"),
        ('<Folder path="a"><Property Name="a/../b"/></Folder>', '".."'),
        ('<Folder path="a"><Property Name="./b"/></Folder>', '".."'),
        ('<Folder path="a"><Property Name="/Inbox"/></Folder>', 'leading "/"'),
        ('<Folder path="a"><Property Name="a&#9;b"/></Folder>', "control character"),
        ('<Folder path="a"><Property Name="a&#x85;b"/></Folder>', "control character"),
        ('<Folder path="a"><Property Name=""/></Folder>', "minLength"),
        ('<Folder path="x//y"><Property Name="a"/></Folder>', "empty component"),
        ('<Folder path=""><Property Name="a"/></Folder>', "minLength"),
        ('<Folder path="a"><Property/></Folder>', "exactly one"),
        ('<Folder path="a"><Property Name="a" SpecialFolder="Inbox"/></Folder>', "exactly one"),
        ('<Folder path="a"><Property Name="a" Colour="red"/></Folder>', "Colour"),
        ('<Folder path="a">text<Property Name="a"/></Folder>', "Character content"),
        ('<Other path="a"/>', "Other"),
    ],
)
def test_invalid_rule_is_refused_with_its_line(folder: str, words: str) -> None:
    with pytest.raises(FolderMapError) as caught:
        parse_folder_map(wrap('<Folder path="ok"><Property Name="ok"/></Folder>', folder))
    assert caught.value.line == 4
    assert words in str(caught.value)


def test_duplicate_paths_on_one_line_are_refused() -> None:
    rule = '<Folder path="Spam"><Property Name="a"/></Folder>'
    with pytest.raises(FolderMapError, match="repeats line 3"):
        parse_folder_map(wrap(rule + rule.replace("Spam", "spam")))


def test_wrong_root_element_is_refused() -> None:
    with pytest.raises(FolderMapError, match="FolderMaps"):
        parse_folder_map(b"<FolderMaps/>")


def test_missing_file_is_a_folder_map_error(tmp_path: Path) -> None:
    with pytest.raises(FolderMapError, match="cannot read"):
        load_folder_map(tmp_path / "absent.xml")


def test_oversized_file_is_refused_unparsed() -> None:
    with pytest.raises(FolderMapError, match="larger than"):
        parse_folder_map(wrap(f"<!--{'x' * (1 << 20)}-->"))


# --- hostile files -----------------------------------------------------------------------------


def test_external_entity_and_network_dtd_are_refused_and_nothing_leaks(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text(SECRET)
    data = (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE FolderMap SYSTEM "http://127.0.0.1:9/x.dtd" [\n'
        f'  <!ENTITY leak SYSTEM "{secret_file.as_uri()}">\n'
        "]>\n"
        '<FolderMap><Folder path="&leak;"><Property Name="x"/></Folder>&leak;</FolderMap>\n'
    ).encode()
    with pytest.raises(FolderMapError) as caught:
        parse_folder_map(data, source="hostile.xml")
    assert caught.value.line == 2
    assert "DOCTYPE" in str(caught.value)
    assert SECRET not in str(caught.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs a named pipe")
def test_external_entity_file_is_never_opened(tmp_path: Path) -> None:
    # The writer blocks until a reader opens the FIFO, then writes the secret once.  Had
    # the parser opened it, the parser would have taken the secret; the test opens it
    # only after the parse and must find the secret still there, unread.
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)

    def writer() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(SECRET.encode())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    for encoding in ("utf-8", "utf-16"):  # UTF-16 slips past the byte scan; the parser holds
        data = (
            f'<?xml version="1.0" encoding="{encoding}"?>\n'
            f'<!DOCTYPE FolderMap [<!ENTITY leak SYSTEM "{fifo.as_uri()}">]>\n'
            "<FolderMap>&leak;</FolderMap>\n"
        ).encode(encoding)
        with pytest.raises(FolderMapError, match="DOCTYPE") as caught:
            parse_folder_map(data)
        assert SECRET not in str(caught.value)
    with open(fifo, "rb") as reader:  # the writer's one open, if the parser never took it
        assert reader.read() == SECRET.encode()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_dtd_is_never_fetched_from_the_network() -> None:
    # A listener of our own, so a fetch would show as a pending connection.  (Some
    # libxml2 builds, 2.14 and later, have no HTTP client at all; others would connect.)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        port = listener.getsockname()[1]
        for encoding in ("utf-8", "utf-16"):
            data = (
                f'<?xml version="1.0" encoding="{encoding}"?>\n'
                f'<!DOCTYPE FolderMap SYSTEM "http://127.0.0.1:{port}/x.dtd">\n'
                "<FolderMap/>\n"
            ).encode(encoding)
            with pytest.raises(FolderMapError, match="DOCTYPE"):
                parse_folder_map(data)
        # The parse is synchronous, and a TCP connect returns only once the handshake is
        # done: a fetch would be waiting in the backlog by now.
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.parametrize(("file", "line"), [("dtd_network.xml", 2), ("billion_laughs.xml", 2)])
def test_hostile_doctype_files_are_refused(file: str, line: int) -> None:
    started = time.monotonic()
    with pytest.raises(FolderMapError, match="DOCTYPE") as caught:
        load_folder_map(DATA / file)
    assert caught.value.line == line
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(("depth", "words"), [(200, "deeper than 100"), (300, "depth")])
def test_deep_nesting_is_refused(depth: int, words: str) -> None:
    nested = "<Folder>" * depth + "</Folder>" * depth
    with pytest.raises(FolderMapError, match=words) as caught:
        parse_folder_map(wrap(nested))
    assert caught.value.line == 3


# --- names the target takes ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "target"),
    [
        # What every server takes passes as it is, "%" included where it reads as no mark.
        (("Archive", "2019"), ("Archive", "2019")),
        (("Ünïcødé", "日本"), ("Ünïcødé", "日本")),
        (
            ("a.b", ".hidden", "*star", "back\\slash", "x~"),
            ("a.b", ".hidden", "*star", "back\\slash", "x~"),
        ),
        (("100% done", "%percent"), ("100% done", "%percent")),
        # The delimiter inside a name (Exchange allows "/") stays inside that level.
        (("Projects/2019",), ("Projects%2F2019",)),
        ((".", ".."), ("%2E", "%2E%2E")),
        (("", "leading"), ("%-", "leading")),  # "/leading" split at its delimiter
        (("~user",), ("%7Euser",)),  # Dovecot: "Begins with '~'"
        (
            ("tab\there", "nul\x00", "del\x7f", "c1\x85"),
            ("tab%09here", "nul%00", "del%7F", "c1%C2%85"),
        ),
        # A "%" that would read as a mark is escaped itself, so no name can pose as another.
        (("%2F", "%%", "%-", "%#", "100%"), ("%252F", "%25%25", "%25-", "%25#", "100%25")),
    ],
)
def test_a_folder_name_is_made_one_the_target_takes(
    source: tuple[str, ...], target: tuple[str, ...]
) -> None:
    assert safe_subpath(source, "/") == target


def test_the_delimiter_escaped_is_the_targets_own() -> None:
    assert safe_subpath(("a/b.c",), ".") == ("a/b%2Ec",)


def test_levels_past_the_limit_fold_into_the_last_one_and_keep_their_names() -> None:
    deep = tuple(f"d{i}" for i in range(10))
    assert safe_subpath(deep, "/", max_levels=4) == ("d0", "d1", "d2", "d3%%d4%%d5%%d6%%d7%%d8%%d9")
    assert safe_subpath(deep[:4], "/", max_levels=4) == deep[:4]


def test_a_name_too_long_is_cut_and_ends_with_a_digest_of_the_whole() -> None:
    (cut,) = safe_subpath(("x" * 300,), "/")
    assert re.fullmatch(r"x{178}%#[0-9a-f]{20}", cut)
    (other,) = safe_subpath(("x" * 299 + "y",), "/")
    assert other[:178] == cut[:178] and other != cut


@pytest.mark.parametrize(
    "name",
    [
        "日" * 100,  # 300 octets of UTF-8, 269 of modified UTF-7: Dovecot refuses it
        "&" * 150,  # "&-" each in modified UTF-7
        "\U0001f4e7" * 60,  # outside the BMP: two UTF-16 units each
    ],
)
def test_the_length_limit_counts_octets_as_the_target_stores_them(name: str) -> None:
    (cut,) = safe_subpath((name,), "/")
    assert "%#" in cut
    assert len(cut.encode()) <= 200
    assert len(imap_utf7.encode(cut)) <= 200  # as Dovecot stores it


def test_a_thousand_levels_become_at_most_64_within_1000_octets() -> None:
    path = tuple(f"d{i}" for i in range(1000))
    levels = safe_subpath(path, "/")
    assert levels[:63] == path[:63]
    assert len(levels) == 64
    assert levels[63].startswith("d63%%d64%%") and "%#" in levels[63]
    assert len("/".join(levels)) <= 1000
    assert safe_subpath(path, "/") == levels  # a rerun maps it the same way


def test_a_long_path_folds_levels_until_the_whole_fits() -> None:
    path = tuple(c * 150 for c in "abcdefgh")  # 8 levels of 150: 1207 octets with delimiters
    levels = safe_subpath(path, "/")
    assert levels[:5] == path[:5]
    assert len("/".join(levels)) <= 1000 and len(levels) == 6
    assert levels[5].startswith("f" * 150 + "%%") and "%#" in levels[5]


_ALPHABET = ["a", "F", "2", "5", "%", "#", "-", "~", ".", "/", "\t"]


def _names(longest: int) -> list[str]:
    return [
        "".join(chars)
        for length in range(longest + 1)
        for chars in itertools.product(_ALPHABET, repeat=length)
    ]


def test_no_two_source_paths_share_a_target_name() -> None:
    # Every name of up to 3 characters drawn from the marks and what they are made of,
    # alone and as every pair of levels of up to 2, and folded (3 levels into 2).
    short, shorter = _names(3), _names(2)
    paths: list[tuple[str, ...]] = [(n,) for n in short]
    paths += list(itertools.product(shorter, repeat=2))
    seen: dict[tuple[str, ...], tuple[str, ...]] = {}
    for path in paths:
        target = safe_subpath(path, "/")
        assert seen.setdefault(target, path) == path, f"{path!r} and {seen[target]!r}"
    folded: dict[tuple[str, ...], tuple[str, ...]] = {}
    for path in itertools.product(["a", "", "%", "%-", "/", "a%"], repeat=3):
        target = safe_subpath(path, "/", max_levels=2)
        assert folded.setdefault(target, path) == path, f"{path!r} and {folded[target]!r}"


def test_every_target_level_is_one_dovecot_takes() -> None:
    refused = re.compile(r"[\x00-\x1f\x7f/]|^~|^\.\.?$|^$")
    for path in [("a/b", "..", ".", "", "~x", "ctl\x01"), tuple(f"d{i}" for i in range(1000))]:
        for level in safe_subpath(path, "/"):
            assert not refused.search(level), level


def test_limits_too_small_to_name_anything_are_refused() -> None:
    with pytest.raises(ValueError):
        safe_subpath(("a",), "/", max_level_octets=20)
    with pytest.raises(ValueError):
        safe_subpath(("a",), "//")
    with pytest.raises(ValueError):
        safe_subpath((), "/")

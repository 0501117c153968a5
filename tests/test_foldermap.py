"""Specifications of migrator.foldermap: the folder map file and where each folder goes."""

from __future__ import annotations

import os
import socket
import threading
import time
import unicodedata
from pathlib import Path

import pytest

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
    # Opening a FIFO for reading blocks until a writer comes, so the writer learns
    # whether anything opened it; the test itself opens it only after the parse.
    fifo = tmp_path / "secret.fifo"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as pipe:
            opened.set()
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
    time.sleep(0.1)
    assert not opened.is_set()
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    thread.join(timeout=5)
    os.close(reader)


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
        time.sleep(0.1)
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

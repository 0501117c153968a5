"""The listing's FETCH answers read fast, agreeing with imapclient's general parser, and
handed back to it (None) wherever they hold anything unexpected."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from imapclient.response_parser import parse_fetch_response

from migrator.connectors.imap.changes import read_flags
from migrator.connectors.imap.connection import read_listing
from migrator.connectors.imap.listing import (
    FIELDS_ITEM,
    Listed,
    RawFetch,
    listing_groups,
    listing_ranges,
    parse_flags,
    parse_listing,
)

FIELDS = b"Date: Tue, 25 Aug 2020 10:17:38 +0000\r\nMessage-ID: <a@x>\r\n\r\n"
DOVECOT: RawFetch = [
    (b'1 (UID 7 INTERNALDATE "25-Aug-2020 10:17:38 +0000" RFC822.SIZE 82217 FLAGS'
     b" (\\Seen \\Recent) BODY[HEADER.FIELDS (MESSAGE-ID DATE)] {%d}" % len(FIELDS), FIELDS),
    b")",
    b'2 (UID 9 INTERNALDATE " 4-Apr-2023 09:18:52 -0230" RFC822.SIZE 13 FLAGS () '
    b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)] NIL)",
]  # fmt: skip
MINUS_0230 = timezone(-timedelta(hours=2, minutes=30))
# Every answer in the form Dovecot gives: read with one match each.
USUAL: RawFetch = [
    *DOVECOT[:2],
    (b'2 (UID 8 INTERNALDATE "31-Dec-1999 23:59:59 +1400" RFC822.SIZE 0 FLAGS ($Label1) '
     b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)] {0}", b""),
    b")",
]  # fmt: skip


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (DOVECOT, {
            7: Listed(7, 82217, datetime(2020, 8, 25, 10, 17, 38, tzinfo=UTC),
                      ("\\Seen", "\\Recent"), FIELDS),
            9: Listed(9, 13, datetime(2023, 4, 4, 9, 18, 52, tzinfo=MINUS_0230), (), None),
        }),
        # Items in another order, a keyword, the fields as a quoted string with escapes.
        ([b'3 (FLAGS ($Label1 \\Flagged) BODY[HEADER.FIELDS (MESSAGE-ID DATE)] '
          b'"Message-ID: <\\"q\\"@x>" RFC822.SIZE 5 UID 4 INTERNALDATE NIL)'], {
            4: Listed(4, 5, None, ("$Label1", "\\Flagged"), b'Message-ID: <"q"@x>'),
        }),
        # A FLAGS change the server reports meanwhile: without a UID it is left out, with
        # one it joins that message's answer.
        ([b"5 (FLAGS (\\Deleted))", *DOVECOT[:2], b"1 (UID 7 FLAGS (\\Answered))"], {
            7: Listed(7, 82217, datetime(2020, 8, 25, 10, 17, 38, tzinfo=UTC),
                      ("\\Answered",), FIELDS),
        }),
        (USUAL, {
            7: Listed(7, 82217, datetime(2020, 8, 25, 10, 17, 38, tzinfo=UTC),
                      ("\\Seen", "\\Recent"), FIELDS),
            8: Listed(8, 0, datetime(1999, 12, 31, 23, 59, 59,
                                     tzinfo=timezone(timedelta(hours=14))), ("$Label1",), b""),
        }),
        ([None], {}),
        # Left to imapclient: an INTERNALDATE not in RFC 3501's form, a missing size, a
        # literal where none was announced, an unbalanced list, a bare string.
        ([b'1 (UID 1 INTERNALDATE "2020-08-25 10:17:38" RFC822.SIZE 1 FLAGS ())'], None),
        ([b"1 (UID 1 FLAGS ())"], None),
        ([(b"1 (UID 1 RFC822.SIZE 1 FLAGS ()", b"x"), b")"], None),
        ([b"1 (UID 1 RFC822.SIZE 1 FLAGS (\\Seen)"], None),
        ([b'"1" (UID 1 RFC822.SIZE 1)'], None),
    ],
)  # fmt: skip
def test_parse_listing(data: RawFetch, expected: dict[int, Listed] | None) -> None:
    assert parse_listing(data) == expected


@pytest.mark.parametrize("data", [DOVECOT, USUAL])
def test_the_fast_reading_agrees_with_imapclient(data: RawFetch) -> None:
    fast = parse_listing(data)
    general = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
    assert fast is not None and set(fast) == set(general)
    for uid, listed in fast.items():
        d = general[uid]
        assert listed.size == d[b"RFC822.SIZE"]
        assert listed.internaldate == d[b"INTERNALDATE"]
        assert listed.internaldate.utcoffset() == d[b"INTERNALDATE"].utcoffset()
        assert listed.flags == tuple(f.decode() for f in d[b"FLAGS"])
        assert listed.fields == d[FIELDS_ITEM]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([b'1 (UID 1 INTERNALDATE "2020-08-25 10:17:38" RFC822.SIZE 1 FLAGS ())'],
         {1: Listed(1, 1, None, (), None)}),
        ([b'1 (UID 2 INTERNALDATE "25 Aug 2020 10:17:38 +0100" RFC822.SIZE 3 FLAGS (\\Seen))'],
         {2: Listed(2, 3, datetime(2020, 8, 25, 9, 17, 38, tzinfo=UTC), ("\\Seen",), None)}),
    ],
)  # fmt: skip
def test_what_the_fast_reading_leaves_imapclient_reads(
    data: RawFetch, expected: dict[int, Listed]
) -> None:
    assert parse_listing(data) is None
    assert read_listing(data) == expected


CHANGED_FLAGS: RawFetch = [
    b"1 (UID 7 FLAGS (\\Seen \\Flagged) MODSEQ (41))",
    b"4 (UID 12 FLAGS () MODSEQ (44))",
    b"5 (UID 13 FLAGS ($Forwarded \\Recent \\Deleted))",
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (CHANGED_FLAGS, {7: ("\\Seen", "\\Flagged"), 12: (),
                         13: ("$Forwarded", "\\Recent", "\\Deleted")}),
        ([None], {}),
        # Left to imapclient: another session's change without a UID, items in another
        # order, a keyword in a literal, one message answered twice.
        ([*CHANGED_FLAGS, b"9 (FLAGS (\\Seen))"], None),
        ([b"1 (FLAGS (\\Seen) UID 7)"], None),
        ([(b"1 (UID 7 FLAGS ({3}", b"odd"), b"))"], None),
        ([CHANGED_FLAGS[0], b"1 (UID 7 FLAGS (\\Answered))"], None),
    ],
)  # fmt: skip
def test_parse_flags(data: RawFetch, expected: dict[int, tuple[str, ...]] | None) -> None:
    assert parse_flags(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        CHANGED_FLAGS,
        [*CHANGED_FLAGS, b"9 (FLAGS (\\Seen))"],
        [b"1 (FLAGS (\\Seen $Label1) UID 7)"],
        [CHANGED_FLAGS[0], b"1 (UID 7 FLAGS (\\Answered))"],
    ],
)
def test_read_flags_fast_or_not_gives_what_imapclient_reads(data: RawFetch) -> None:
    general = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
    assert read_flags(data) == {
        str(uid): tuple(
            f.decode() for f in d[b"FLAGS"] if f.lower() not in (b"\\recent", b"\\deleted")
        )
        for uid, d in general.items()
        if b"FLAGS" in d
    }


BARE: RawFetch = [
    b'1 (UID 7 INTERNALDATE "25-Aug-2020 10:17:38 +0000" RFC822.SIZE 82217 FLAGS (\\Seen))',
    b'2 (UID 9 INTERNALDATE " 4-Apr-2023 09:18:52 -0230" RFC822.SIZE 13 FLAGS ())',
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (BARE, {
            7: Listed(7, 82217, datetime(2020, 8, 25, 10, 17, 38, tzinfo=UTC), ("\\Seen",), None),
            9: Listed(9, 13, datetime(2023, 4, 4, 9, 18, 52, tzinfo=MINUS_0230), (), None),
        }),
        # Items in another order, and a FLAGS change without a UID: the tokeniser reads them.
        ([b'3 (FLAGS ($Label1) RFC822.SIZE 5 UID 4 INTERNALDATE NIL)', b"5 (FLAGS (\\Deleted))"],
         {4: Listed(4, 5, None, ("$Label1",), None)}),
        ([b'1 (UID 1 INTERNALDATE "2020-08-25 10:17:38" RFC822.SIZE 1 FLAGS ())'], None),
    ],
)  # fmt: skip
def test_a_listing_without_header_fields_is_read_fast_too(
    data: RawFetch, expected: dict[int, Listed] | None
) -> None:
    assert parse_listing(data, None) == expected
    if expected is not None:
        assert read_listing(data, None) == expected


@pytest.mark.parametrize(
    ("exists", "uidnext", "chunk", "expected"),
    [
        (10, 11, 20, [(1, 0)]),  # small: the whole folder at once
        (50, 0, 20, [(1, 0)]),  # no UIDNEXT
        (60, 61, 20, [(1, 20), (21, 40), (41, 0)]),
        (60, 61, 25, [(1, 20), (21, 40), (41, 0)]),
        (40, 1001, 20, [(1, 500), (501, 0)]),  # sparse UIDs: ranges as wide
    ],
)
def test_a_large_folder_is_listed_in_uid_ranges_the_last_open_ended(
    exists: int, uidnext: int, chunk: int, expected: list[tuple[int, int]]
) -> None:
    assert listing_ranges(exists, uidnext, chunk) == expected


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ([3, 0, 5], [([0, 1, 2], True)]),
        ([3, None, 5], [([0], True), ([1], False), ([2], True)]),  # no LIST-STATUS count
        ([8, 4, 9], [([0], True), ([1], True), ([2], False)]),  # 8 at most a group; 9 alone
        ([6, 6, 1, 1, 1], [([0], True), ([1, 2, 3], True), ([4], True)]),  # three folders at most
    ],
)  # fmt: skip
def test_listing_groups_asks_for_small_folders_together_and_a_large_one_alone(
    counts: list[int | None], expected: list[tuple[list[int], bool]]
) -> None:
    assert listing_groups(counts, chunk=8, most=3) == expected

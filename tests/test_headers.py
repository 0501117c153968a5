"""Reading Message-ID, Date and Received from a header block: every field, even after a
line Python's email parser stops at (it loses every field after one)."""

from __future__ import annotations

import email.parser
import email.policy
from datetime import UTC, datetime, timedelta, timezone

import pytest
from corpus import corpus_messages

from migrator.headers import message_fields, parse_date, read_fields, received_date
from migrator.recognition import header_end

MALFORMED = (
    b"Received: from a by b; Tue, 3 Sep 2024 10:42:11 +0000\r\n"
    b"Subject: x\r\n"
    b"this line has no colon\r\n"
    b"Message-ID: <after@x>\r\n"
    b"Date: Mon, 2 Sep 2024 09:00:00 +0200\r\n"
    b"\r\n"
    b"body\r\n"
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Message-ID: <a@x>\r\nDate: Tue, 3 Sep 2024 10:42:11 +0000\r\n\r\n",
         ("<a@x>", "Tue, 3 Sep 2024 10:42:11 +0000")),
        (b"message-id:<a@x>\nDATE:  Tue, 3 Sep 2024\n\n", ("<a@x>", "Tue, 3 Sep 2024")),
        # Folded: both read across the fold, unfolded.
        (b"Message-ID:\r\n <a@x>\r\nDate: Tue,\r\n\t3 Sep 2024\r\n\r\n",
         ("<a@x>", "Tue, 3 Sep 2024")),
        # The first of two; text around the brackets dropped.
        (b"Message-ID: junk <a@x> more\r\nMessage-ID: <b@x>\r\n\r\n", ("<a@x>", None)),
        (b"Message-ID: no brackets\r\n\r\n", ("no brackets", None)),
        (b"Message-ID:\r\nDate:\r\n\r\n", (None, "")),
        (b"Message-ID: <a@x>\rDate: Tue\r\r", ("<a@x>", "Tue")),  # bare CR ends a line too
        (b"", (None, None)),
        (b"\r\n", (None, None)),
        (b"Message-ID: <a@x>", ("<a@x>", None)),  # no empty line at the end
        (b"Message-ID: <\xc3\xa9@x>\r\n\r\n", ("<\xe9@x>", None)),  # UTF-8 (RFC 6532)
        (b"Message-ID: <\xe9@x>\r\n\r\n", ("<\ufffd@x>", None)),  # stray 8-bit
        (b" <a@x>\r\nMessage-ID: <b@x>\r\n\r\n", ("<b@x>", None)),  # starts with a fold
        (b"Message-ID : <a@x>\r\n\r\n", ("<a@x>", None)),  # obs-FWS before the colon
        (b"From someone\r\nMessage-ID: <a@x>\r\n\r\n", ("<a@x>", None)),  # mbox From_
        (b": x\r\nMessage-ID: <a@x>\r\n\r\n", ("<a@x>", None)),  # no field name: skipped
        (b"Subject: a\r\n\r\nMessage-ID: <body@x>\r\n", (None, None)),  # the body is not read
        (MALFORMED, ("<after@x>", "Mon, 2 Sep 2024 09:00:00 +0200")),
    ],
)  # fmt: skip
def test_message_id_and_date_are_read_from_any_header_block(
    raw: bytes, expected: tuple[str | None, str | None]
) -> None:
    message_id, date, _ = message_fields(raw)
    assert (message_id, date) == expected


def test_fields_after_a_malformed_line_are_read_where_the_email_package_loses_them() -> None:
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(MALFORMED)
    assert parsed.get("Message-ID") is None  # the email package stopped at the stray line
    message_id, date, received = message_fields(MALFORMED)
    assert message_id == "<after@x>"
    assert parse_date(date) == datetime(2024, 9, 2, 9, tzinfo=timezone(timedelta(hours=2)))
    assert received == datetime(2024, 9, 3, 10, 42, 11, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("from a by b with ESMTP id 1; Tue, 3 Sep 2024 10:42:11 +0000",
         datetime(2024, 9, 3, 10, 42, 11, tzinfo=UTC)),
        ("from a (b; c) by d; Tue, 3 Sep 2024 10:42:11 -0700 (PDT)",
         datetime(2024, 9, 3, 10, 42, 11, tzinfo=timezone(timedelta(hours=-7)))),
        ("from a by b", None),  # no date
        ("from a by b; not a date", None),
        ("", None),
        (None, None),
    ],
)  # fmt: skip
def test_a_received_field_dates_by_what_follows_its_last_semicolon(
    value: str | None, expected: datetime | None
) -> None:
    assert received_date(value) == expected


def test_the_topmost_received_is_the_arrival_time() -> None:
    block = (
        b"Received: by mx2; Wed, 4 Sep 2024 08:00:00 +0000\r\n"
        b"Received: by mx1; Tue, 3 Sep 2024 08:00:00 +0000\r\n\r\n"
    )
    assert message_fields(block)[2] == datetime(2024, 9, 4, 8, tzinfo=UTC)


def test_every_corpus_message_gives_the_message_id_the_email_package_finds_where_it_can() -> None:
    parser = email.parser.BytesHeaderParser(policy=email.policy.compat32)
    for name, message in corpus_messages():
        block = message[: header_end(message) or len(message)]
        theirs = parser.parsebytes(block + b"\r\n").get("Message-ID")
        if theirs is not None:
            expected = " ".join(str(theirs).split())
            start, end = expected.find("<"), expected.find(">")
            if start != -1 and end > start:
                expected = expected[start : end + 1]
            assert message_fields(block)[0] == expected, name


def test_read_fields_keeps_every_value_in_order() -> None:
    block = b"To: a\r\nCc: b\r\nto: c\r\n\r\n"
    assert read_fields(block, ["TO"]) == {"to": ["a", "c"]}

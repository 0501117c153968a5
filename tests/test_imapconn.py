"""Message-ID and Date for the keys: a fast reading of plain header blocks that must
agree with the email package's, which reads every other block."""

from __future__ import annotations

import pytest
from corpus import corpus_messages

from migrator.imapconn import _HEADER_PARSER, _plain_fields, header_fields
from migrator.rewrite import header_block_end

FIELDS = b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"


def _email_package(raw: bytes) -> tuple[object, object]:
    headers = _HEADER_PARSER.parsebytes(raw)
    return headers.get("Message-ID"), headers.get("Date")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"Message-ID: <a@x>\r\nDate: Tue, 3 Sep 2024 10:42:11 +0000\r\n\r\n",
         ("<a@x>", "Tue, 3 Sep 2024 10:42:11 +0000")),
        (b"message-id:<a@x>\nDATE:  Tue, 3 Sep 2024\n\n", ("<a@x>", "Tue, 3 Sep 2024")),
        # Folded: the Date keeps its fold, the Message-ID is read across it.
        (b"Message-ID:\r\n <a@x>\r\nDate: Tue,\r\n\t3 Sep 2024\r\n\r\n",
         ("<a@x>", "Tue,\r\n\t3 Sep 2024")),
        # The first of two; text around the brackets dropped.
        (b"Message-ID: junk <a@x> more\r\nMessage-ID: <b@x>\r\n\r\n", ("<a@x>", None)),
        (b"Message-ID: no brackets\r\n\r\n", ("no brackets", None)),
        (b"Message-ID:\r\nDate:\r\n\r\n", (None, "")),
        (b"Message-ID: <a@x>\rDate: Tue\r\r", ("<a@x>", "Tue")),  # bare CR ends a line too
        (b"", (None, None)),
        (b"\r\n", (None, None)),
        (b"Message-ID: <a@x>", ("<a@x>", None)),  # no empty line at the end
        # Blocks the fast reading leaves to the email package:
        (b"Message-ID: <\xe9@x>\r\n\r\n", ("<\ufffd@x>", None)),  # 8-bit
        (b" <a@x>\r\nMessage-ID: <b@x>\r\n\r\n", ("<b@x>", None)),  # starts with a fold
        (b"Message-ID : <a@x>\r\n\r\n", (None, None)),  # not a field line: headers end
        (b"From someone\r\nMessage-ID: <a@x>\r\n\r\n", ("<a@x>", None)),  # mbox From_
        (b": x\r\nMessage-ID: <a@x>\r\n\r\n", ("<a@x>", None)),  # no field name
        (b"Date: x\x0bMessage-ID: <a@x>\r\n\r\n", (None, "x\x0bMessage-ID: <a@x>")),  # VT: no end
    ],
)  # fmt: skip
def test_header_fields(raw: bytes, expected: tuple[str | None, str | None]) -> None:
    assert header_fields({FIELDS: raw}) == expected
    message_id, date = _email_package(raw)  # what the email package alone reads
    assert (_first(message_id), None if date is None else str(date)) == expected


def test_the_fast_reading_agrees_with_the_email_package_on_every_corpus_message() -> None:
    read_fast = 0
    for name, message in corpus_messages():
        block = message[: header_block_end(message)] + b"\r\n"
        fields = _plain_fields(block)
        if fields is not None:
            read_fast += 1
            assert fields == _email_package(block), name
        assert header_fields({FIELDS: block})[0] == _first(_email_package(block)[0]), name
    assert read_fast > 10  # the plain blocks of the corpus took the fast reading


def _first(message_id: object) -> str | None:
    if message_id is None:
        return None
    text = " ".join(str(message_id).split())
    start = text.find("<")
    end = text.find(">", start + 1)
    return text[start : end + 1] if start != -1 and end != -1 else (text or None)

"""INTERNALDATE as the IMAP target writes it in APPEND: as imapclient would, faster."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from imapclient.datetime_util import datetime_to_INTERNALDATE

from migrator.connectors.imap.appending import internaldate_text


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7))),
         "17-Jul-1996 02:44:25 -0700"),
        (datetime(2024, 1, 5, 23, 0, 9, tzinfo=UTC), "05-Jan-2024 23:00:09 +0000"),
        (datetime(2023, 4, 4, 9, 18, 52, 999, tzinfo=timezone(-timedelta(hours=2, minutes=30))),
         "04-Apr-2023 09:18:52 -0230"),
        (datetime(2023, 12, 31, 0, 0, 0, tzinfo=timezone(timedelta(hours=13, minutes=45))),
         "31-Dec-2023 00:00:00 +1345"),
    ],
)  # fmt: skip
def test_internaldate_text_is_what_imapclient_writes(when: datetime, expected: str) -> None:
    assert internaldate_text(when) == expected
    assert datetime_to_INTERNALDATE(when) == expected


def test_internaldate_years_have_four_digits() -> None:
    # RFC 3501 date-year is 4DIGIT; imapclient's strftime writes "987".
    assert internaldate_text(datetime(987, 6, 1, 12, tzinfo=UTC)) == "01-Jun-0987 12:00:00 +0000"

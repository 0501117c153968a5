"""A copy window's FETCH answers read fast, agreeing with imapclient's general parser, and
handed back to it (None) wherever they hold anything unexpected."""

from __future__ import annotations

import ssl

import pytest
from imapclient import IMAPClient
from imapclient.response_parser import parse_fetch_response
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.bodies import BODY_ITEM, BODY_ITEMS, parse_bodies
from migrator.connectors.imap.connection import read_bodies
from migrator.connectors.imap.listing import RawFetch

ONE = b"Subject: one\r\n\r\nbody\r\n"
TWO = b"Subject: two\r\n\r\n(not) {3}\r\n)"
# As Dovecot answers UID FETCH 7,9 (BODY.PEEK[]).
DOVECOT: RawFetch = [
    (b"1 (UID 7 BODY[] {%d}" % len(ONE), ONE),
    b")",
    (b"2 (UID 9 BODY[] {%d}" % len(TWO), TWO),
    b")",
]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (DOVECOT, {7: ONE, 9: TWO}),
        ([(b"3 (UID 4 BODY[] {0}", b""), b")"], {4: b""}),
        ([None], {}),
        # Left to imapclient: the items in another order, a FLAGS change reported
        # meanwhile, two answers for one message, a literal of another length than
        # announced, a body as a quoted string, an answer cut short.
        ([(b"1 (BODY[] {%d}" % len(ONE), ONE), b" UID 7)"], None),
        ([b"5 (FLAGS (\\Deleted))", *DOVECOT], None),
        ([*DOVECOT[:2], *DOVECOT[:2]], None),
        ([(b"1 (UID 7 BODY[] {99}", ONE), b")"], None),
        ([b'1 (UID 7 BODY[] "x")'], None),
        ([(b"1 (UID 7 BODY[] {%d}" % len(ONE), ONE)], None),
        ([(b"1 (UID 7 BODY[] {%d}" % len(ONE), ONE), b" FLAGS (\\Seen))"], None),
    ],
)  # fmt: skip
def test_parse_bodies(data: RawFetch, expected: dict[int, bytes] | None) -> None:
    assert parse_bodies(data) == expected


@pytest.mark.parametrize(
    "data",
    [
        [(b"1 (BODY[] {%d}" % len(ONE), ONE), b" UID 7)"],
        [b"5 (FLAGS (\\Deleted))", *DOVECOT],
        [(b"1 (UID 7 BODY[] {%d}" % len(ONE), ONE), b" FLAGS (\\Seen))"],
    ],
)
def test_what_the_fast_reading_leaves_imapclient_reads(data: RawFetch) -> None:
    general = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
    assert parse_bodies(data) is None
    assert general[7][BODY_ITEM] == ONE


def test_the_fast_reading_agrees_with_imapclient() -> None:
    general = parse_fetch_response(list(DOVECOT), normalise_times=False, uid_is_key=True)
    assert parse_bodies(DOVECOT) == {uid: d[BODY_ITEM] for uid, d in general.items()}


def _message(n: int) -> bytes:
    return f"Subject: body {n}\r\nMessage-ID: <b-{n}@x>\r\n\r\n{'y' * 300 * n}\r\n".encode()


def test_a_real_dovecots_bodies_are_read_fast_and_a_flag_change_meanwhile_is_read_too(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    user = make_user()
    sessions = [
        IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context, timeout=30)
        for _ in range(2)
    ]
    reader, other = sessions
    for session in sessions:
        session.login(user, DEFAULT_USER_PASSWORD)
    try:
        for n in range(1, 4):
            other.append("INBOX", _message(n))
        reader.select_folder("INBOX", readonly=True)
        uids = reader.search("ALL")
        assert len(uids) == 3
        expected = {uid: _message(n) for n, uid in enumerate(uids, start=1)}
        data = imapwire.uid_fetch(reader, ",".join(map(str, uids)), BODY_ITEMS)[1]
        assert parse_bodies(data) == expected  # Dovecot's answers: the fast reading

        # A UID the folder no longer has is simply absent.
        more = ",".join(map(str, [*uids, max(uids) + 10]))
        assert read_bodies(imapwire.uid_fetch(reader, more, BODY_ITEMS)[1]) == expected

        # Another session's flag change reaches this one inside the FETCH's answers.
        other.select_folder("INBOX")
        other.add_flags(uids[:1], ["\\Flagged"])
        data = imapwire.uid_fetch(reader, ",".join(map(str, uids)), BODY_ITEMS)[1]
        assert parse_bodies(data) is None  # not the usual form: imapclient's reading
        assert read_bodies(data) == expected
    finally:
        for session in sessions:
            session.logout()

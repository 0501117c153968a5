"""migrator.connectors.imap.wire: the imapclient and imaplib internals it reaches under are
still there, with the signatures it calls them with, and still do what it needs against
a real Dovecot. An upgrade of imapclient or Python that breaks one fails here, not in a
migration."""

from __future__ import annotations

import imaplib
import inspect
import logging
import ssl
import sys
import threading
import tomllib
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from importlib.metadata import version
from pathlib import Path

import pytest
from imapclient import IMAPClient, imap4, tls
from imapclient.util import to_bytes
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)

from migrator.connectors.imap import connection
from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.appending import internaldate_text
from migrator.connectors.imap.changes import all_states, list_with_states, read_flags
from migrator.connectors.imap.connection import read_listing
from migrator.connectors.imap.listing import HEADER_ITEM, INDEX_ITEMS
from migrator.connectors.imap.uidsets import append_uids, vanished_uids

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"

# -- the versions checked ------------------------------------------------------------------


def test_python_is_one_whose_imaplib_imapwire_was_checked_on() -> None:
    first, last = imapwire.PYTHON_VERIFIED
    assert first <= sys.version_info[:2] <= last, (
        f"imapwire was checked on the imaplib of Python {first} to {last}: check the "
        "internals it uses on this one, then widen imapwire.PYTHON_VERIFIED"
    )


def test_imapclient_is_a_version_imapwire_was_checked_against() -> None:
    lowest, first_unchecked = imapwire.IMAPCLIENT_VERIFIED
    installed = Version(version("imapclient"))
    assert Version(lowest) <= installed < Version(first_unchecked), (
        f"imapclient {installed}: check migrator/imapwire.py against it, then widen "
        "imapwire.IMAPCLIENT_VERIFIED and the pin in pyproject.toml"
    )


def test_pyproject_pins_imapclient_to_the_versions_imapwire_was_checked_against() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text("utf-8"))["project"]["dependencies"]
    pins = [Requirement(d) for d in dependencies if Requirement(d).name.lower() == "imapclient"]
    lowest, first_unchecked = imapwire.IMAPCLIENT_VERIFIED
    assert [p.specifier for p in pins] == [SpecifierSet(f">={lowest},<{first_unchecked}")]


# -- the internals, by signature -------------------------------------------------------------

# Each private method imapwire calls, with the signature it calls it by.
INTERNALS = [
    (IMAPClient, "_raw_command", "(self, command, args, uid=True)"),
    (IMAPClient, "_normalise_folder", "(self, folder_name)"),
    (IMAPClient, "_process_select_response", "(self, resp)"),
    (imaplib.IMAP4, "_new_tag", "(self)"),
    (imaplib.IMAP4, "_command_complete", "(self, name, tag)"),
    (imaplib.IMAP4, "send", "(self, data)"),
    (imaplib.IMAP4, "uid", "(self, command, *args)"),
    (imaplib.IMAP4, "_simple_command", "(self, name, *args)"),
    (IMAPClient, "_process_select_response", "(self, resp)"),
    (IMAPClient, "_proc_folder_list", "(self, folder_data)"),
    (IMAPClient, "_create_IMAP4", "(self)"),
    (imaplib.IMAP4, "_get_capabilities", "(self)"),
    (
        tls.IMAP4_TLS,
        "__init__",
        "(self, host: str, port: int = 993, ssl_context: Optional[ssl.SSLContext] = None, "
        "timeout: Optional[float] = None)",
    ),
    (
        imap4.IMAP4WithTimeout,
        "__init__",
        "(self, address: str, port: int, timeout: Optional[float]) -> None",
    ),
]


@pytest.mark.parametrize(
    ("owner", "name", "signature"), INTERNALS, ids=[f"{o.__name__}.{n}" for o, n, _ in INTERNALS]
)
def test_each_internal_imapwire_calls_still_takes_what_it_passes(
    owner: type, name: str, signature: str
) -> None:
    assert str(inspect.signature(getattr(owner, name))) == signature


def test_imaplib_lets_the_state_login_literal_sets_run_the_commands_that_follow() -> None:
    # imaplib refuses a command whose state list lacks the session's state; "AUTH" is what
    # its own login() sets, and what imapwire.login_literal and authenticate_ir set by hand.
    for command in ("SELECT", "EXAMINE", "LIST", "CREATE", "APPEND", "GETQUOTAROOT"):
        assert "AUTH" in imaplib.Commands[command], command


def test_to_bytes_encodes_a_folder_name_and_keeps_bytes() -> None:
    assert to_bytes('"INBOX"') == b'"INBOX"'
    assert to_bytes(b'"INBOX"') == b'"INBOX"'


# -- against Dovecot ---------------------------------------------------------------------------


def _connect(dovecot: DovecotServer, ssl_context: ssl.SSLContext) -> IMAPClient:
    client = IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context, timeout=30)
    client.normalise_times = False
    return client


@pytest.fixture
def client(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> Iterator[IMAPClient]:
    """A fresh user's session, logged in through imapclient's public API."""
    with _connect(dovecot, ssl_context) as session:
        session.login(make_user(), DEFAULT_USER_PASSWORD)
        yield session


def _message(n: int) -> bytes:
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: wire {n}\r\n"
        f"Message-ID: <wire-{n}@example.test>\r\n\r\nbody {n}\r\n" + "x" * n * 100
    ).encode()


def test_imapclient_keeps_its_imaplib_session_as__imap_in_the_state_login_sets(
    client: IMAPClient,
) -> None:
    # Every imapwire function reaches the imaplib session through `_imap`; login_literal
    # sets by hand the state imaplib's own login() leaves it in.
    assert isinstance(client._imap, imaplib.IMAP4)
    assert client._imap.state == "AUTH"


@pytest.mark.parametrize("implicit_tls", [True, False], ids=["imaps", "imap"])
def test_a_greeted_client_takes_the_greetings_capabilities_and_sends_no_command_for_them(
    implicit_tls: bool, dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    port = dovecot.imaps_port if implicit_tls else dovecot.imap_port
    with imapwire.GreetedClient(
        "127.0.0.1", port, ssl=implicit_tls, ssl_context=ssl_context, timeout=30
    ) as greeted:
        assert greeted._imap.tagnum == 0  # no command yet: imaplib numbers each one it sends
        assert greeted._imap.welcome.startswith(b"* OK [CAPABILITY ")
        told = set(greeted.capabilities())
        asked = {bytes(c).upper() for c in greeted._imap.capability()[1][-1].split()}
        assert told == asked and b"IMAP4REV1" in told
        greeted.login(make_user(), DEFAULT_USER_PASSWORD)
        assert greeted.folder_exists("INBOX")


def test_quiet_stops_imaplib_logging_each_line(
    client: IMAPClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="imapclient.imaplib"):
        client.noop()
        assert caplog.records, "imapclient no longer logs imaplib's lines: is quiet() needed?"
        caplog.clear()
        imapwire.quiet(client)
        client.noop()
    assert caplog.records == []


def test_multiappend_stores_each_message_with_its_flags_and_internaldate(
    client: IMAPClient,
) -> None:
    assert client.has_capability("LITERAL+") and client.has_capability("MULTIAPPEND")
    folder = "Wire/Zürich"  # modified UTF-7 on the wire (RFC 3501 section 5.1.3)
    client.create_folder(folder)
    when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=-7)))
    sent = [
        (("\\Seen",), when, _message(1)),
        (("\\Flagged", "\\Answered"), None, _message(2)),
        ((), when + timedelta(days=1), _message(3)),
    ]
    wire = [(f, None if d is None else internaldate_text(d), m) for f, d, m in sent]

    assert imapwire.multiappend(client, folder, iter(wire)) == "OK"

    client.select_folder(folder, readonly=True)
    stored = client.fetch(client.search("ALL"), ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])
    by_body = {data[b"BODY[]"]: data for data in stored.values()}
    assert set(by_body) == {message for _, _, message in sent}
    for flags, date, message in sent:
        assert {f.decode() for f in by_body[message][b"FLAGS"]} - {"\\Recent"} == set(flags)
        if date is not None:  # the same instant (Dovecot's maildir keeps it in UTC)
            assert by_body[message][b"INTERNALDATE"] == date


def test_multiappend_refused_is_no_and_the_session_stays_in_step(client: IMAPClient) -> None:
    # RFC 3502: all or nothing. The server reads every literal (LITERAL+) before it answers,
    # so the next command's tagged answer is its own.
    messages = [((), None, _message(1)), ((), None, _message(2))]
    assert imapwire.multiappend(client, "No such folder", iter(messages)) == "NO"
    client.create_folder("Later")
    assert imapwire.multiappend(client, "Later", iter(messages)) == "OK"
    assert client.folder_status("Later", ["MESSAGES"])[b"MESSAGES"] == 2
    assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0


def test_uid_fetch_reads_a_whole_folder_as_the_listing_reads_it(client: IMAPClient) -> None:
    messages = [((), None, _message(n)) for n in range(1, 6)]
    assert imapwire.multiappend(client, "INBOX", iter(messages)) == "OK"
    client.select_folder("INBOX")

    typ, data = imapwire.uid_fetch(client, "1:*", INDEX_ITEMS)

    assert typ == "OK"
    listed = read_listing(data, HEADER_ITEM)
    assert sorted(m.size for m in listed.values()) == [len(m) for _, _, m in messages]
    assert set(listed) == set(client.search("ALL"))


def test_login_literal_sends_an_8bit_password_as_utf8_and_authenticates(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    password = 'Pä"ss\\wörd-€-日本'
    user = make_user(password)
    with _connect(dovecot, ssl_context) as session:
        typ, _ = imapwire.login_literal(session, user, password)
        assert typ == "OK"
        # imaplib itself checks the state: SELECT in NONAUTH would raise.
        assert session.select_folder("INBOX")[b"EXISTS"] == 0


def test_login_literal_refused_is_no_with_the_servers_words_and_stays_unauthenticated(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    user = make_user('Pä"ss\\wörd')
    with _connect(dovecot, ssl_context) as session:
        typ, data = imapwire.login_literal(session, user, "wrong-€")
        assert typ == "NO"
        assert b"[AUTHENTICATIONFAILED]" in data[-1]
        with pytest.raises(imaplib.IMAP4.error, match="illegal in state NONAUTH"):
            session.select_folder("INBOX")


def test_authenticate_ir_logs_in_as_the_user_with_the_first_response_in_the_command(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    user = make_user()
    with _connect(dovecot, ssl_context) as session:
        session.login(user, DEFAULT_USER_PASSWORD)
        session.create_folder("Only hers")
    password = 'Pä"ss\\wörd-€-日本'
    other = make_user(password)
    with _connect(dovecot, ssl_context) as session:
        assert session.has_capability("SASL-IR")
        # The master user, acting as `user` (RFC 4616 authorization identity), in UTF-8.
        message = f"{user}\0{MASTER_USER}\0{MASTER_PASSWORD}".encode()
        assert imapwire.authenticate_ir(session, "PLAIN", message)[0] == "OK"
        assert session.folder_exists("Only hers")  # imaplib's state is AUTH: commands run
    with _connect(dovecot, ssl_context) as session:
        typ, _ = imapwire.authenticate_ir(session, "PLAIN", f"\0{other}\0{password}".encode())
        assert typ == "OK" and not session.folder_exists("Only hers")


def test_authenticate_ir_refused_is_no_with_the_servers_words_and_stays_unauthenticated(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    user = make_user()
    with _connect(dovecot, ssl_context) as session:
        typ, data = imapwire.authenticate_ir(session, "PLAIN", f"\0{user}\0wrong-€".encode())
        assert typ == "NO"
        assert b"[AUTHENTICATIONFAILED]" in data[-1]
        with pytest.raises(imaplib.IMAP4.error, match="illegal in state NONAUTH"):
            session.select_folder("INBOX")


def test_multiappend_answer_says_where_the_messages_went(client: IMAPClient) -> None:
    messages = [((), None, _message(n)) for n in range(1, 4)]
    typ, answer = imapwire.multiappend_answer(client, "INBOX", iter(messages))
    assert typ == "OK"
    said = append_uids(answer, 3)
    assert said is not None
    client.select_folder("INBOX")
    assert said == (client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"], [1, 2, 3])


def test_uid_fetch_changed_gives_the_changed_flags_and_the_vanished_uids(
    client: IMAPClient,
) -> None:
    assert b"QRESYNC" in client.enable("QRESYNC")
    messages = [((), None, _message(n)) for n in range(1, 6)]
    assert imapwire.multiappend(client, "INBOX", iter(messages)) == "OK"
    modseq = client.select_folder("INBOX")[b"HIGHESTMODSEQ"]
    client.add_flags([2], [b"\\Flagged"])
    client.delete_messages([4])
    client.expunge()
    client.unselect_folder()
    client.select_folder("INBOX", readonly=True)

    typ, data, vanished = imapwire.uid_fetch_changed(
        client, "1:5", "(UID FLAGS)", modseq, vanished=True
    )

    assert typ == "OK"
    assert set(read_flags(data)) == {"2"}
    assert vanished_uids(vanished, below=6) == frozenset({4})


def test_list_status_gives_every_folders_state_in_one_command(client: IMAPClient) -> None:
    client.create_folder("Données/Été")
    assert b"CONDSTORE" in client.enable("CONDSTORE")

    typ, raw = imapwire.list_status(client, "UIDVALIDITY UIDNEXT HIGHESTMODSEQ")

    assert typ == "OK" and len(raw) >= 2
    states = all_states(client, "test")
    assert {"INBOX", "Données/Été"} <= set(states)
    assert states["INBOX"].uidnext == client.folder_status("INBOX", ["UIDNEXT"])[b"UIDNEXT"]


def _listed(folders: list[tuple[tuple[bytes, ...], bytes, str]]) -> dict[str, object]:
    volatile = {b"\\marked", b"\\unmarked"}
    return {
        name: (delimiter, {f for f in flags if f.lower() not in volatile})
        for flags, delimiter, name in folders
    }


def test_list_with_states_gives_the_folder_list_and_every_state_in_one_round_trip(
    client: IMAPClient,
) -> None:
    client.create_folder("Données/Été")  # (a parent "Données", \\Noselect or not, listed)
    client.create_folder('Quote "and" backslash \\')
    client.append("Données/Été", _message(1))
    assert b"CONDSTORE" in client.enable("CONDSTORE")

    folders, states = list_with_states(client, "test")

    # As imapclient lists them: names, delimiters and flags (in Dovecot's order of the
    # moment, and but for RFC 3348's \Marked and \UnMarked, which a listing moves).
    assert _listed(folders) == _listed(client.list_folders())
    assert states == all_states(client, "test")
    assert {"INBOX", "Données/Été", 'Quote "and" backslash \\'} <= set(states)
    assert states["Données/Été"].uidnext == 2
    client.select_folder("INBOX")  # the session goes on in step


def test_create_subscribe_makes_and_subscribes_a_folder_and_stays_in_step(
    client: IMAPClient,
) -> None:
    created, subscribed = imapwire.create_subscribe(client, "Données/Été")

    assert (created[0], subscribed[0]) == ("OK", "OK")
    assert "Données/Été" in [name for _, _, name in client.list_sub_folders()]
    # Again: CREATE is refused with RFC 5530's code, SUBSCRIBE is answered on its own, and
    # the next command's answer is its own.
    created, subscribed = imapwire.create_subscribe(client, "Données/Été")
    assert created[0] == "NO" and b"[ALREADYEXISTS]" in created[1]
    assert subscribed[0] == "OK"
    assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0


def test_pipelined_reads_each_commands_answers_apart_and_stays_in_step(
    client: IMAPClient,
) -> None:
    client.create_folder("Données/Été")
    assert b"QRESYNC" in client.enable("QRESYNC")
    messages = [((), None, _message(n)) for n in range(1, 4)]
    assert imapwire.multiappend(client, "Données/Été", iter(messages)) == "OK"
    folder = imapwire.folder_arg(client, "Données/Été")

    answers = imapwire.pipelined(
        client,
        [
            ("EXAMINE", b"EXAMINE " + folder),
            ("FETCH", b"UID FETCH 2:* (UID FLAGS)"),
            ("SEARCH", b"UID SEARCH UID 1:2"),
            ("EXAMINE", b"EXAMINE " + imapwire.folder_arg(client, "Nowhere")),
            ("FETCH", b"UID FETCH 1:* (UID FLAGS)"),  # no folder selected: BAD
            ("EXAMINE", b"EXAMINE INBOX"),
        ],
    )

    examined, fetched, searched, refused, unselected, inbox = answers
    info = imapwire.select_info(client, examined)
    assert examined.typ == "OK" and info[b"EXISTS"] == 3 and b"HIGHESTMODSEQ" in info
    assert fetched.typ == "OK" and set(
        read_flags(fetched.untagged.get("FETCH", []) + searched.untagged.get("FETCH", []))
    ) == {"2", "3"}
    # Dovecot runs a folder's FETCH and SEARCH side by side (RFC 3501 5.5 allows it): their
    # untagged answers belong to the folder's commands together, not to each one.
    pool = {name: v for answer in (fetched, searched) for name, v in answer.untagged.items()}
    assert searched.typ == "OK" and pool["SEARCH"] == [b"1 2"]
    assert refused.typ == "NO" and unselected.typ == "BAD"
    assert inbox.typ == "OK" and imapwire.select_info(client, inbox)[b"EXISTS"] == 0
    # The session goes on in step, INBOX selected.
    assert client.search(["ALL"]) == []
    assert client.folder_status("Données/Été", ["MESSAGES"])[b"MESSAGES"] == 3


def test_examine_fetch_lists_many_folders_in_one_go_and_a_missing_one_alone(
    client: IMAPClient,
) -> None:
    client.create_folder("Données/Été")
    for folder, count in (("INBOX", 3), ("Données/Été", 2)):
        messages = [((), None, _message(n)) for n in range(1, count + 1)]
        assert imapwire.multiappend(client, folder, iter(messages)) == "OK"
    client.select_folder("Données/Été", readonly=True)
    steps = [
        imapwire.Step("Données/Été", False, "2"),  # selected already: no EXAMINE
        imapwire.Step("INBOX", True, "1:*"),
        imapwire.Step("Gone", True, "1:*"),  # refused: the FETCH after it runs in no folder
        imapwire.Step("Données/Été", True, "1:*"),
    ]

    answers = list(imapwire.examine_fetch(client, steps, INDEX_ITEMS))

    assert [a.folder for a in answers] == [s.folder for s in steps]
    assert [len(read_listing(a.fetched, HEADER_ITEM)) for a in answers] == [1, 3, 0, 2]
    assert answers[2].refused is not None and answers[1].refused is None
    assert answers[1].info[b"EXISTS"] == 3 and b"UIDVALIDITY" in answers[3].info
    assert answers[0].info == {}
    # In step: the next command's answer is its own, in the folder selected last.
    assert client.search("ALL") == [1, 2]


def test_examine_fetch_takes_a_step_without_examine_first_only(client: IMAPClient) -> None:
    # Two FETCHes with no EXAMINE between may be run side by side (RFC 3501 section 5.5;
    # Dovecot does): their answers would mix.
    steps = [imapwire.Step("INBOX", True, "1:*"), imapwire.Step("INBOX", False, "1")]
    with pytest.raises(ValueError, match="first"):
        list(imapwire.examine_fetch(client, steps, INDEX_ITEMS))


def test_examine_fetch_left_early_reads_the_rest_and_stays_in_step(client: IMAPClient) -> None:
    client.create_folder("Other")
    steps = [imapwire.Step(f, True, "1:*") for f in ("INBOX", "Other", "INBOX")]
    answers = imapwire.examine_fetch(client, steps, INDEX_ITEMS)
    assert next(answers).folder == "INBOX"
    answers.close()  # the caller stopped: the other answers are read and dropped
    assert client.folder_status("Other", ["MESSAGES"])[b"MESSAGES"] == 0
    assert client.noop()[0].startswith(b"NOOP")


def test_send_runs_writes_many_appends_before_their_answers_are_read(client: IMAPClient) -> None:
    client.create_folder("Later")
    first = imapwire.send_runs(
        client,
        [
            ("INBOX", iter([((), None, _message(1))])),
            ("No such folder", iter([((), None, _message(2))])),
        ],
    )
    second = imapwire.send_runs(client, [("Later", iter([((), None, _message(3))] * 2))])

    # A run refused stands alone (RFC 3502); each batch's answers are its own, in order.
    assert [typ for typ, _ in imapwire.runs_answers(client, first)] == ["OK", "NO"]
    ((typ, text),) = imapwire.runs_answers(client, second)
    assert typ == "OK" and b"APPENDUID" in text
    assert client.folder_status("Later", ["MESSAGES"])[b"MESSAGES"] == 2
    assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 1


def test_logout_of_a_session_cut_off_inside_a_literal_returns_at_once(
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An APPEND that failed after its literal began leaves the server reading the
    literal: it takes LOGOUT for message bytes and never answers.  The failed mailbox
    then waited the connection's whole timeout on every such end (120 s each, measured
    on a million-message copy), holding its lock."""
    monkeypatch.setattr(connection, "LOGOUT_SECONDS", 0.5)
    session = _connect(dovecot, ssl_context)
    session.login(make_user(), DEFAULT_USER_PASSWORD)
    session.socket().settimeout(600)
    session._imap.send(b"A900 APPEND INBOX {100000+}\r\nFrom: cut@example.test\r\n")
    ended = threading.Event()
    closer = threading.Thread(target=lambda: (connection.logout(session), ended.set()), daemon=True)
    closer.start()
    assert ended.wait(30), "logout waited on a session that cannot answer"
    closer.join()

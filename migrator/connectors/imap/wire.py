"""The imapclient and imaplib internals the fast IMAP path needs, behind one small module.

imapclient's public API cannot do these things the copier needs, so these functions reach
under it; nothing else in migrator touches a private attribute of either library:

    GreetedClient    IMAPClient._create_IMAP4 (overridden to make the sessions below),
                     imapclient's tls.IMAP4_TLS and imap4.IMAP4WithTimeout (subclassed),
                     IMAP4._get_capabilities (overridden), .untagged_responses and
                     .state: the capabilities the greeting carried, without a CAPABILITY
                     command (offers: asked again where a refusal would follow)
    quiet            IMAPClient._imap.debug = 0 (imapclient sets 5, which costs CPU)
    login_literal    IMAPClient._raw_command(b"LOGIN", ...), then IMAPClient._imap.state
    authenticate_ir  IMAPClient._imap._simple_command("AUTHENTICATE", ...), then ._imap.state:
                     RFC 4959 SASL-IR, the first response in the command (one round trip)
    uid_fetch        IMAPClient._imap.uid("FETCH", ...), the answer as imaplib reads it
    multiappend      IMAPClient._normalise_folder, IMAPClient._imap._new_tag,
                     ._imap.send and ._imap._command_complete: one APPEND written by hand
                     (multiappend_answer: with the tagged answer's text, for APPENDUID;
                     multiappend_runs: several, pipelined, one round trip)
    uid_fetch_changed  IMAPClient._imap.uid and ._imap.untagged_responses: RFC 7162
                     CHANGEDSINCE and the VANISHED (EARLIER) answers, which imapclient
                     does not read
    list_status      IMAPClient._imap._simple_command and ._imap.untagged_responses:
                     RFC 5819 LIST ... RETURN (STATUS ...), which imapclient cannot send
    create_subscribe IMAPClient._normalise_folder, ._imap._new_tag, .send and
                     ._command_complete: CREATE and SUBSCRIBE pipelined, one round trip
    examine_fetch    IMAPClient._normalise_folder, ._process_select_response, and
                     ._imap._new_tag, .send, ._command_complete, .untagged_responses and
                     .state: EXAMINE and UID FETCH of many folders pipelined, one round trip
    pipelined        IMAPClient._normalise_folder (folder_arg), ._process_select_response
                     (select_info), ._proc_folder_list (folder_list), and ._imap._new_tag,
                     .send, ._command_complete, .untagged_responses and .state: any
                     commands written at once, their answers read in order (an
                     incremental pass's EXAMINE and FETCHes of every folder that moved,
                     or its LIST and LIST-STATUS: one round trip)

Private attributes promise nothing, so what these were checked against is written down
here: imapclient within IMAPCLIENT_VERIFIED (pyproject.toml pins the same upper bound) and
the imaplib of Python within PYTHON_VERIFIED (the standard library has no pin).
tests/test_imapwire.py checks the installed versions, the signatures of every internal used,
and runs each function against a real Dovecot: an upgrade that breaks one fails there.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from imapclient import IMAPClient, imap4, tls
from imapclient.util import to_bytes

from migrator.connectors.imap.listing import RawFetch

# imapclient: the lowest version allowed and the first one not checked.  4.1.0 runs the
# tests; 3.0.1's `_raw_command` and `_normalise_folder` were read (the same but for LITERAL+
# caching).
IMAPCLIENT_VERIFIED = ("3.0.1", "4.2")
# Python: the first and last minor version whose imaplib was checked.  3.11 runs the tests;
# the source of every IMAP4 method used here is the same in 3.12.1 and 3.13.0.
PYTHON_VERIFIED = ((3, 11), (3, 13))


class _Greeted(imaplib.IMAP4):
    """An imaplib session that takes its capabilities from the greeting where the server
    put them there (RFC 3501 section 7.1: the CAPABILITY response code in the initial OK
    or PREAUTH, "so that a client need not send a separate CAPABILITY command"), rather
    than asking for them again: one round trip less for every connection.  Only the
    greeting's: any later reading (imaplib's own after STARTTLS) asks the server."""

    _greeted = False
    from_greeting = False  # the capabilities are the greeting's list (see offers)

    def _get_capabilities(self) -> None:
        said = None if self._greeted else self.untagged_responses.pop("CAPABILITY", None)
        self._greeted = True
        if not said or not isinstance(said[-1], bytes) or not said[-1].strip():
            self.from_greeting = False
            super()._get_capabilities()  # type: ignore[misc]
            return
        self.capabilities = tuple(str(said[-1], "ascii", "replace").upper().split())
        self.from_greeting = True


class _GreetedTLS(_Greeted, tls.IMAP4_TLS):  # type: ignore[misc]
    pass


class _GreetedPlain(_Greeted, imap4.IMAP4WithTimeout):  # type: ignore[misc]
    pass


class GreetedClient(IMAPClient):  # type: ignore[misc]
    """IMAPClient whose session reads its capabilities from the server's greeting where it
    can (_Greeted): imapclient's own sessions but for that."""

    def _create_IMAP4(self) -> imaplib.IMAP4:
        if self.stream:
            return super()._create_IMAP4()  # type: ignore[no-any-return]
        timeout = getattr(self._timeout, "connect", None)
        if self.ssl:
            # (imapclient's IMAP4_TLS takes the context; mypy sees imaplib's __init__)
            return _GreetedTLS(self.host, self.port, self.ssl_context, timeout)  # type: ignore[call-arg]
        return _GreetedPlain(self.host, self.port, timeout)


def offers(client: IMAPClient, capability: str) -> bool:
    """Whether the server lists `capability`, for a decision that refuses without it
    (STARTTLS, an OAuth mechanism): where the list is the greeting's and lacks it, the
    server is asked once more (a CAPABILITY command) before the answer is no.  RFC 3501
    has the greeting carry the whole list; a server that shortens it costs a round trip,
    not a refusal."""
    if client.has_capability(capability):
        return True
    imap = client._imap
    if not isinstance(imap, _Greeted) or not imap.from_greeting or imap.state != "NONAUTH":
        return False
    imap._get_capabilities()  # asks the server: the greeting's list was read once already
    return bool(client.has_capability(capability))


def quiet(client: IMAPClient) -> None:
    """imapclient sets imaplib's debug level to 5, so imaplib formats the repr of every
    line and every FETCH literal (whole message bodies, twice) for a log record that is
    then dropped: a quarter of the copier's CPU.  Level 0 builds no such strings."""
    client._imap.debug = 0


def login_literal(client: IMAPClient, login: str, password: str) -> tuple[str, list[bytes]]:
    """LOGIN for a server without AUTH=PLAIN, with an 8-bit login or password as a literal
    of its UTF-8 (RFC 3501 section 4.3: a literal holds any octets; RFC 6855 says UTF-8); an
    ASCII one as a quoted string.  On OK the session is authenticated, as after imaplib's
    own login().  The tagged response's (type, data); a NO raises nothing."""
    typ, data = client._raw_command(b"LOGIN", [_astring(login), _astring(password)], uid=False)
    if typ == "OK":
        # imaplib checks each command against its state; its login() sets this itself.
        client._imap.state = "AUTH"
    return str(typ), list(data)


def authenticate_ir(client: IMAPClient, mechanism: str, response: bytes) -> tuple[str, list[bytes]]:
    """RFC 4959 SASL-IR: AUTHENTICATE with the client's first response on the command line,
    one round trip, where imaplib's authenticate() first waits for the server's empty
    challenge.  Only for a server that lists SASL-IR.  On OK the session is authenticated,
    as after imaplib's own authenticate().  The tagged response's (type, data); a NO
    raises nothing (a BAD raises imaplib's error, which quotes the server, not the
    command)."""
    initial = base64.b64encode(response).decode("ascii") or "="  # "=": an empty response
    typ, data = client._imap._simple_command("AUTHENTICATE", mechanism, initial)
    if typ == "OK":
        client._imap.state = "AUTH"  # as imaplib's authenticate() sets it
    return str(typ), list(data)


def _astring(text: str) -> bytes:
    """An ASCII value as a quoted string; any other as its UTF-8 bytes, which imapclient's
    `_raw_command` sends as a literal."""
    data = text.encode("utf-8")
    if not data.isascii():
        return data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def uid_fetch(client: IMAPClient, uids: str, items: str) -> tuple[str, RawFetch]:
    """UID FETCH `uids` `items` through imaplib: imapclient would take "1:*" for one UID and
    needs a SEARCH first.  The tagged response's type and imaplib's unparsed FETCH data."""
    typ, data = client._imap.uid("FETCH", uids, items)
    return typ, data


def uid_fetch_changed(
    client: IMAPClient, uids: str, items: str, modseq: int, *, vanished: bool
) -> tuple[str, RawFetch, list[bytes]]:
    """RFC 7162 UID FETCH `uids` `items` (CHANGEDSINCE `modseq`), with VANISHED where asked
    (QRESYNC enabled): the tagged type, imaplib's FETCH data and the text of each VANISHED
    answer (b"(EARLIER) 3:5,9")."""
    imap = client._imap
    imap.untagged_responses.pop("VANISHED", None)  # an expunge seen earlier: not ours
    modifier = f"(CHANGEDSINCE {modseq}{' VANISHED' if vanished else ''})"
    typ, data = imap.uid("FETCH", uids, items, modifier)
    gone = [bytes(v) for v in imap.untagged_responses.pop("VANISHED", []) if v]
    return typ, data, gone


def list_status(client: IMAPClient, items: str) -> tuple[str, list[bytes | tuple[bytes, bytes]]]:
    """RFC 5819 `LIST "" "*" RETURN (STATUS (items))`: the tagged type and imaplib's raw
    STATUS answers (b'INBOX (UIDNEXT 5 ...)', or a literal's (line, name) and the rest)."""
    imap = client._imap
    for name in ("STATUS", "LIST"):
        imap.untagged_responses.pop(name, None)
    typ, _ = imap._simple_command("LIST", '""', '"*"', f"RETURN (STATUS ({items}))")
    statuses = list(imap.untagged_responses.pop("STATUS", []))
    imap.untagged_responses.pop("LIST", None)
    return str(typ), statuses


def create_subscribe(
    client: IMAPClient, folder: str
) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """CREATE `folder`, and SUBSCRIBE it sent before CREATE's answer (RFC 3501 section 5.5:
    a client may send a command before the last one's answer; the server answers in
    order): one round trip where imapclient's create_folder and subscribe_folder take two.
    Each tagged answer's type and text; a BAD raises imaplib's error."""
    imap = client._imap
    name = to_bytes(client._normalise_folder(folder))
    tags: list[bytes] = []
    for command in (b"CREATE", b"SUBSCRIBE"):
        tag: bytes = imap._new_tag()
        imap.send(tag + b" " + command + b" " + name + b"\r\n")
        tags.append(tag)
    answers: list[tuple[str, bytes]] = []
    for command_name, tag in zip(("CREATE", "SUBSCRIBE"), tags, strict=True):
        typ, data = imap._command_complete(command_name, tag)
        answers.append((str(typ), data[0] if data and isinstance(data[0], bytes) else b""))
    return answers[0], answers[1]


class Examined(NamedTuple):
    """One step's answers in examine_fetch: its EXAMINE's (as imapclient's select_folder
    gives it; empty where the step selected nothing) and its UID FETCH's; `refused` is the
    tagged text of a NO to the EXAMINE (then `info` and `fetched` are empty)."""

    folder: str
    info: dict[bytes, Any]
    fetched: RawFetch
    refused: str | None = None


class Step(NamedTuple):
    """One step of examine_fetch: EXAMINE `folder` first (or not: it is selected already),
    then UID FETCH `uids` in it."""

    folder: str
    examine: bool
    uids: str


def examine_fetch(
    client: IMAPClient, steps: Sequence[Step], items: str, *, verb: str = "EXAMINE"
) -> Iterator[Examined]:
    """Each step's EXAMINE (where asked; `verb` SELECT: a target's folder, whose answer
    names its PERMANENTFLAGS) and UID FETCH `items`, every command sent before
    any answer is read (RFC 3501 section 5.5; the server answers in order, and a failed
    EXAMINE leaves no folder selected, so the FETCH after it is refused, not run in the
    folder before): one round trip for all of them.  The answers are read step by step
    as the caller takes them (memory: one step's at a time); a caller that stops early
    has the rest read and dropped.  A NO to a FETCH or any BAD raises imaplib's error.

    Only the first step may go without an EXAMINE: a server may run two FETCHes sent
    together side by side and mix their answers (RFC 3501 section 5.5; Dovecot does),
    where an EXAMINE waits for the commands before it to end."""
    if any(not step.examine for step in steps[1:]):
        raise ValueError("only the first step may go without an EXAMINE")
    if verb not in ("EXAMINE", "SELECT"):
        raise ValueError(f"a folder is opened by EXAMINE or SELECT, not {verb}")
    opening = b" " + verb.encode("ascii") + b" "
    imap = client._imap
    pending: list[bytes] = []  # tags sent whose tagged answer is not read yet, in order
    out = bytearray()
    fetch = items.encode("ascii") + b"\r\n"
    for step in steps:
        if step.examine:
            tag: bytes = imap._new_tag()
            out += tag + opening + to_bytes(client._normalise_folder(step.folder)) + b"\r\n"
            pending.append(tag)
        tag = imap._new_tag()
        out += tag + b" UID FETCH " + step.uids.encode("ascii") + b" " + fetch
        pending.append(tag)
    imap.send(bytes(out))  # one write: every command in one TLS record or a few

    def answer(name: str) -> tuple[str, str]:
        typ, data = imap._command_complete(name, pending.pop(0))
        return str(typ), as_str(data[0] if data and data[0] is not None else b"")

    try:
        for step in steps:
            info: dict[bytes, Any] = {}
            if step.examine:
                imap.untagged_responses = {}  # as imaplib's select() flushes them
                typ, text = answer(verb)
                if typ != "OK":
                    imap.state = "AUTH"
                    with contextlib.suppress(imaplib.IMAP4.error):
                        answer("FETCH")  # BAD: no folder selected
                    imap.untagged_responses = {}
                    yield Examined(step.folder, {}, [], text)
                    continue
                imap.state = "SELECTED"
                info = client._process_select_response(imap.untagged_responses)
            imap.untagged_responses = {}
            typ, text = answer("FETCH")
            if typ != "OK":
                raise imap.error(f"fetch failed: {text}")
            fetched: RawFetch = imap.untagged_responses.pop("FETCH", [])
            yield Examined(step.folder, info, fetched)
    finally:
        with contextlib.suppress(imaplib.IMAP4.error, OSError):
            while pending:  # the answers nobody will read: read and dropped
                answer("DROPPED")
        imap.untagged_responses = {}


def as_str(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


# Bytes of small messages (and the command around them) gathered into one write.
COALESCE_BYTES = 64 * 1024


def multiappend(
    client: IMAPClient, folder: str, messages: Iterable[tuple[Sequence[str], str | None, bytes]]
) -> str:
    """multiappend_answer's type alone."""
    return multiappend_answer(client, folder, messages)[0]


def multiappend_answer(
    client: IMAPClient, folder: str, messages: Iterable[tuple[Sequence[str], str | None, bytes]]
) -> tuple[str, bytes]:
    """RFC 3502 MULTIAPPEND into `folder` of each (flags, INTERNALDATE text or None,
    message), every message an RFC 7888 LITERAL+ literal, never copied but to gather
    small ones into one write;
    the tagged response's type ("OK" or "NO") and text (RFC 4315: "[APPENDUID v 5:9] ...").
    The server must offer LITERAL+ (and
    MULTIAPPEND for more than one message); the answer to a BAD raises imaplib's error.

    imapclient's multiappend builds the same command but copies every message twice on the
    way (into a `_literal`, then onto its `{n+}` prefix): a tenth of the copier's CPU.
    These are the imaplib calls imapclient's own `_raw_command` makes."""
    tag = _send_multiappend(client, folder, messages)
    typ, data = client._imap._command_complete("APPEND", tag)
    text = data[0] if data and isinstance(data[0], bytes) else b""
    return str(typ), text


Run = tuple[str, Iterable[tuple[Sequence[str], str | None, bytes]]]


def multiappend_runs(client: IMAPClient, runs: Sequence[Run]) -> list[tuple[str, bytes]]:
    """multiappend_answer of each (folder, messages) of `runs`, every APPEND written before
    any answer is read: runs_answers(send_runs(...))."""
    return runs_answers(client, send_runs(client, runs))


def send_runs(client: IMAPClient, runs: Sequence[Run]) -> list[bytes]:
    """Write the MULTIAPPEND of each (folder, messages) of `runs` and read no answer
    (RFC 3501 section 5.5: a client may send a command before the last one's answer; the
    server answers in order): their tags, for runs_answers.  Each run stands alone
    (RFC 3502: a NO stores none of its messages, and the runs after it still go)."""
    return [_send_multiappend(client, folder, messages) for folder, messages in runs]


def runs_answers(client: IMAPClient, tags: Sequence[bytes]) -> list[tuple[str, bytes]]:
    """The tagged answers (type and text) of the APPENDs `send_runs` wrote, in order; every
    one is read, even after a BAD, which then raises imaplib's error.  Commands sent after
    them may be in flight: their answers wait for their own readers."""
    imap = client._imap
    answers: list[tuple[str, bytes]] = []
    failure: Exception | None = None
    for tag in tags:
        try:
            typ, data = imap._command_complete("APPEND", tag)
        except imaplib.IMAP4.abort:
            raise  # the connection is gone: nothing more to read
        except imaplib.IMAP4.error as exc:
            failure = failure or exc
            continue
        answers.append((str(typ), data[0] if data and isinstance(data[0], bytes) else b""))
    if failure is not None:
        raise failure
    return answers


def _send_multiappend(
    client: IMAPClient, folder: str, messages: Iterable[tuple[Sequence[str], str | None, bytes]]
) -> bytes:
    """Write one MULTIAPPEND (multiappend_answer's command); its tag."""
    imap = client._imap
    tag: bytes = imap._new_tag()
    # Small messages are gathered into one write of up to COALESCE_BYTES (two writes a
    # message cost both ends a TLS record and a system call each: more than copying a
    # small message once); a larger one is written as it is, never copied.  The gathered
    # bytearray is written as it is too (sendall takes any buffer), not copied to bytes.
    out = bytearray(tag + b" APPEND " + to_bytes(client._normalise_folder(folder)))
    for flags, internaldate, message in messages:
        head = " (" + " ".join(flags) + ")"
        if internaldate is not None:
            head += ' "' + internaldate + '"'
        out += head.encode("ascii") + b" {%d+}\r\n" % len(message)
        if len(message) >= COALESCE_BYTES:
            imap.send(out)
            out.clear()
            imap.send(message)
            continue
        out += message
        if len(out) >= COALESCE_BYTES:
            imap.send(out)
            out.clear()
    out += b"\r\n"
    imap.send(out)
    return tag


class Answered(NamedTuple):
    """One pipelined command's answer: the tagged type ("OK", "NO"; "BAD" where imaplib
    raised it) and text, and the untagged answers the command drew, by imaplib's names
    ("FETCH", "VANISHED", "SEARCH", an EXAMINE's "EXISTS", "UIDVALIDITY" ...)."""

    typ: str
    text: str
    untagged: dict[str, list[Any]]


def folder_arg(client: IMAPClient, folder: str) -> bytes:
    """A folder name as a command's argument (modified UTF-7, quoted where needed)."""
    name: bytes = to_bytes(client._normalise_folder(folder))
    return name


def folder_list(client: IMAPClient, raw: list[Any]) -> list[Any]:
    """A LIST's untagged answers (as imaplib keeps them) as imapclient's list_folders gives
    them: (flags, delimiter, name) each."""
    folders: list[Any] = client._proc_folder_list(raw)
    return folders


def select_info(client: IMAPClient, answered: Answered) -> dict[bytes, Any]:
    """An EXAMINE's or SELECT's answer as imapclient's select_folder gives it."""
    info: dict[bytes, Any] = client._process_select_response(answered.untagged)
    return info


def pipelined(client: IMAPClient, commands: Sequence[tuple[str, bytes]]) -> list[Answered]:
    """Each command (its name, and its text after the tag) written before any answer is
    read (RFC 3501 section 5.5; the server answers in order): one round trip for all of
    them.  Every answer is read; a NO or BAD stays in its Answered rather than raising
    (only a lost connection does).  Where they EXAMINE or SELECT, imaplib is told whether
    a folder is selected after the last one (a refused one leaves none selected)."""
    imap = client._imap
    imap.untagged_responses = {}  # what came before: not these commands' answers
    sent: list[tuple[str, bytes]] = []
    out = bytearray()
    for name, text in commands:
        tag: bytes = imap._new_tag()
        out += tag + b" " + text + b"\r\n"
        sent.append((name, tag))
    imap.send(bytes(out))
    answers: list[Answered] = []
    for name, tag in sent:
        try:
            typ, data = imap._command_complete(name, tag)
            text = data[0] if data and isinstance(data[0], bytes) else b""
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error as exc:
            typ, text = "BAD", str(exc).encode("utf-8", "replace")
        answers.append(Answered(str(typ), text.decode("utf-8", "replace"), imap.untagged_responses))
        imap.untagged_responses = {}
    opened = [
        a for (name, _), a in zip(commands, answers, strict=True) if name in ("EXAMINE", "SELECT")
    ]
    if opened:
        imap.state = "SELECTED" if opened[-1].typ == "OK" else "AUTH"
    return answers

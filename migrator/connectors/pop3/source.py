"""POP3 source adapter (RFC 1939): one folder, the Inbox, read without deleting.

Messages are listed with LIST and UIDL, and their header read with TOP n 0, so the
copier can order them newest first (by the newest Received date, else the Date field:
POP3 has no arrival time of its own).  POP3 has no UIDs of the IMAP kind: each
message's checkpoint id is derived from its UIDL (stable across sessions, RFC 1939
section 7), or, where the server has no UIDL, from its header block and which copy of
that header it is.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import poplib
import re
import ssl
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

from migrator.connectors.tls import lost_code, tls_context, untrusted
from migrator.errors import ErrorCode, LoginFailed, MigrationError, PermanentError, TransientError
from migrator.headers import message_fields, parse_date
from migrator.model import ConnectOptions, MailboxJob, TlsMode, TokenLogin
from migrator.oauth.login import bearer_login
from migrator.oauth.sasl import BearerExchange, choose_mechanism, initial_response
from migrator.plan import MessageRef
from migrator.recognition import content_key, header_end
from migrator.secrets import Secret
from migrator.sources.base import SourceFolder

# RFC 1939 section 7: a greeting with a timestamp such as <1896.697170952@dbc.mtview.ca.us>
_APOP_TIMESTAMP = re.compile(rb"<[^<>@\s]+@[^<>\s]+>")
INBOX = SourceFolder(name="INBOX", path=("INBOX",))
POP3_UIDVALIDITY = 0  # POP3 ids never change meaning: one fixed validity
# poplib refuses lines over 2,048 octets; real mail has 4,096-octet header lines and
# 5,000-octet base64 lines.  A line past this is a server gone wrong, not mail.
MAX_LINE = 1024 * 1024


class _LongLines:
    """poplib's line reader with room for the lines real mail has.  poplib reads every
    line of a response through `_getline` (its one reader since Python 3.4); this is
    that method with our limit."""

    file: Any

    def _getline(self) -> tuple[bytes, int]:
        line: bytes = self.file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise poplib.error_proto("line too long")
        if not line:
            raise poplib.error_proto("-ERR EOF")
        octets = len(line)
        # readline ends lines at LF: a line ends in CRLF, or is CR...LF, or LF alone.
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets


class _POP3(_LongLines, poplib.POP3):
    pass


class _POP3_SSL(_LongLines, poplib.POP3_SSL):
    pass


class Pop3Source:
    def __init__(self, job: MailboxJob, options: ConnectOptions) -> None:
        self._job = job
        self._what = f"source mailbox {job.source_identity} ({job.source_server})"
        self._numbers: dict[str, int] = {}  # checkpoint id -> message number in this session
        self._heads: dict[str, bytes] = {}  # checkpoint id -> the start TOP n 0 gave
        self._conn = self._connect(options)

    # -- connection ----------------------------------------------------------------------

    def _connect(self, options: ConnectOptions) -> poplib.POP3:
        server = self._job.source_server
        context = tls_context(options)
        with _pop_errors(self._what):
            conn: poplib.POP3
            if server.tls is TlsMode.IMPLICIT:
                conn = _POP3_SSL(server.host, server.port, timeout=options.timeout, context=context)
            else:
                conn = _POP3(server.host, server.port, timeout=options.timeout)
                capabilities = _capabilities(conn)
                if "STLS" in capabilities:
                    conn.stls(context)  # RFC 2595
                elif not options.allow_plaintext:
                    _quit(conn)
                    raise PermanentError(
                        f"{self._what}: server offers no STLS; use pop3s:// or allow plaintext",
                        code=ErrorCode.NOTLS,
                    )
        try:
            self._login(conn)
        except BaseException:
            _quit(conn)
            raise
        return conn

    def _login(self, conn: poplib.POP3) -> None:
        credentials = self._job.source_credentials
        if isinstance(credentials, TokenLogin):
            self._token_login(conn, credentials)
            return
        password = credentials.password.reveal()
        who = credentials.login + (f" as {credentials.authzid}" if credentials.authzid else "")
        with _pop_errors(self._what, login=who):
            if credentials.authzid:
                # RFC 5034 AUTH PLAIN with an authorization identity (RFC 4616).
                token = "\0".join([credentials.authzid, credentials.login, password])
                encoded = base64.b64encode(token.encode("utf-8")).decode("ascii")
                # poplib has no SASL helper; _shortcmd sends one line and checks +OK.
                conn._shortcmd(f"AUTH PLAIN {encoded}")  # type: ignore[attr-defined]
            elif not _apop(conn, credentials.login, password):
                conn.user(credentials.login)
                conn.pass_(password)

    def _token_login(self, conn: poplib.POP3, login: TokenLogin) -> None:
        """RFC 5034 AUTH with OAUTHBEARER (RFC 7628), or XOAUTH2 where that is all."""
        server = self._job.source_server
        mechanism = choose_mechanism(_capabilities(conn).get("SASL", []))
        if mechanism is None:
            raise LoginFailed(
                f"{self._what}: the server offers neither SASL OAUTHBEARER nor XOAUTH2: "
                "it takes no OAuth 2.0 token"
            )

        def attempt(token: Secret) -> str | None:
            initial = initial_response(
                mechanism, login.login, token.reveal(), server.host, server.port
            )
            try:
                _sasl(conn, mechanism, BearerExchange(mechanism, initial))
            except poplib.error_proto as exc:
                return _text(exc)
            except (OSError, EOFError) as exc:
                # The connection broke, not the token (pop_error: a transient error).
                raise pop_error(exc, self._what, login=login.login) from None
            return None

        bearer_login(login, attempt, protocol="pop3", where=self._what)

    # -- listing -------------------------------------------------------------------------

    def list_folders(self) -> list[SourceFolder]:
        return [INBOX]

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        with _pop_errors(self._what):
            sizes = _numbered(self._conn.list()[1])
            try:
                uidls: dict[int, str] | None = {
                    n: uid.decode("ascii", "replace") for n, uid in _pairs(self._conn.uidl()[1])
                }
            except poplib.error_proto:
                uidls = None  # RFC 1939 makes UIDL optional
            refs = []
            self._numbers.clear()
            self._heads.clear()
            seen: Counter[str] = Counter()
            for number, size in sizes.items():
                # The header block as RETR's lines give it back (see fetch), with the
                # empty line after it where the message has one.
                head = b"\r\n".join(self._conn.top(number, 0)[1]) + b"\r\n"
                message_id, date_text, received = message_fields(head)
                if uidls is not None and number in uidls:
                    uid = _checkpoint_id(uidls[number])
                else:
                    # Without UIDL: the header's digest, and which copy of it this is.
                    key = content_key(head, complete=True) or ""
                    seen[key] += 1
                    uid = _checkpoint_id(f"{key}|{seen[key]}")
                self._numbers[uid] = number
                self._heads[uid] = head
                refs.append(
                    MessageRef(
                        folder=INBOX.name,
                        uidvalidity=POP3_UIDVALIDITY,
                        uid=uid,
                        size=size,
                        internaldate=None,
                        date_header=parse_date(date_text),
                        message_id=message_id,
                        received=received,
                    )
                )
        return refs

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            number = self._numbers.get(ref.uid)
            if number is None:
                continue  # gone since listing
            with _pop_errors(f"{self._what}, message {number}"):
                # poplib strips the line endings and undoes dot-stuffing; POP3 sends
                # CRLF lines (RFC 1939), so joining with CRLF gives the message back.
                lines = self._conn.retr(number)[1]
            yield ref, b"\r\n".join(lines) + b"\r\n"

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        whole = []
        for ref in refs:
            head = self._heads.get(ref.uid)
            if head is None:
                continue
            if header_end(head) is None:
                whole.append(ref)  # all header, or a server that ends it otherwise: RETR
                continue
            yield ref, head
        yield from self.fetch(whole)

    def session(self) -> None:
        # POP3 locks the maildrop for the one session that holds it (RFC 1939).
        return None

    def close(self) -> None:
        # QUIT without DELE: nothing is ever deleted from the source.
        _quit(self._conn)


def _apop(conn: poplib.POP3, login: str, password: str) -> bool:
    """RFC 1939 APOP where the greeting offers it, so the password never crosses; False
    when not offered or refused (many servers cannot check APOP for every account)."""
    if not _APOP_TIMESTAMP.search(conn.getwelcome()):
        return False
    try:
        conn.apop(login, password)
    except poplib.error_proto:
        return False
    return True


def _checkpoint_id(text: str) -> str:
    """A stable id for the checkpoint, from a UIDL or key: the decimal 63-bit digest
    earlier versions checkpointed, so their checkpoints still count."""
    return str(int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16))


# RFC 5034 section 4: an AUTH line with its initial response stays within 255 octets
# (RFC 2449); a longer response (a bearer token) waits for the server's empty challenge.
_MAX_AUTH_LINE = 255


def _sasl(conn: poplib.POP3, mechanism: str, exchange: BearerExchange) -> None:
    """RFC 5034 AUTH, driven by `exchange`; poplib.error_proto with the server's -ERR.
    poplib has no SASL: its `_putcmd` and `_getresp` send a line and read the answer."""
    send: Any = conn._putcmd  # type: ignore[attr-defined]
    read: Any = conn._getresp  # type: ignore[attr-defined]
    first = base64.b64encode(exchange(b"")).decode("ascii")
    line = f"AUTH {mechanism} {first}"
    if len(line) + 2 <= _MAX_AUTH_LINE:
        send(line)
    else:
        send(f"AUTH {mechanism}")
        read()  # "+ ", the empty challenge (or -ERR, raised)
        send(first)
    while True:
        response: bytes = read()  # raises error_proto for -ERR
        if response.startswith(b"+OK"):
            return
        challenge = base64.b64decode(response[2:].strip() or b"")
        send(base64.b64encode(exchange(challenge)).decode("ascii"))


def _capabilities(conn: poplib.POP3) -> dict[str, Any]:
    try:
        return dict(conn.capa())
    except poplib.error_proto:
        return {}  # CAPA (RFC 2449) is optional


def _numbered(lines: list[bytes]) -> dict[int, int]:
    return {number: int(value) for number, value in _pairs(lines)}


def _pairs(lines: list[bytes]) -> Iterator[tuple[int, bytes]]:
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            yield int(parts[0]), parts[1]


def _text(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return text[:300]


def _quit(conn: poplib.POP3) -> None:
    with contextlib.suppress(Exception):
        conn.quit()
    with contextlib.suppress(Exception):
        conn.close()


# RFC 2449 section 8 and RFC 3206 extended response codes: which of our errors each is.
_RESPONSE_CODES: dict[str, tuple[type[MigrationError], ErrorCode]] = {
    "IN-USE": (TransientError, ErrorCode.INUSE),  # another session holds the maildrop
    "LOGIN-DELAY": (TransientError, ErrorCode.THROTTLED),  # logged in too recently
    "SYS/TEMP": (TransientError, ErrorCode.UNAVAILABLE),
    "SYS/PERM": (PermanentError, ErrorCode.REFUSED),
    "AUTH": (LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
}
_RESPONSE_CODE = re.compile(r"-ERR \[([A-Za-z0-9/-]+)\]")


def pop_error(exc: BaseException, what: str, *, login: str | None = None) -> MigrationError:
    """The migrator error, with its code, for a poplib/socket error: the one place where
    they become ours.  `login` names who was logging in when `exc` answers a login."""
    if isinstance(exc, MigrationError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return untrusted(exc, what)
    if isinstance(exc, OSError | EOFError):
        during = " during login" if login is not None else ""
        return TransientError(f"{what}: connection lost{during}: {exc}", code=lost_code(exc))
    if not isinstance(exc, poplib.error_proto):
        raise exc  # not poplib's: nothing to translate
    text = _text(exc)
    if text == "-ERR EOF":
        # poplib's own words for a connection closed mid-answer, not the server's.
        return TransientError(f"{what}: connection lost: {text}", code=ErrorCode.CONNECTION)
    match = _RESPONSE_CODE.match(text)
    known = _RESPONSE_CODES.get(match.group(1).upper()) if match else None
    kind, code = known or (PermanentError, ErrorCode.REFUSED)
    if kind is TransientError:
        return TransientError(f"{what}: server busy: {text}", code=code)
    if login is not None or kind is LoginFailed:
        who = f"login {login} refused" if login else "login refused"
        return LoginFailed(f"{what}: {who}: {text}")
    return PermanentError(f"{what}: {text}", code=code)


@contextlib.contextmanager
def _pop_errors(what: str, *, login: str | None = None) -> Iterator[None]:
    """poplib and socket errors -> ours (pop_error); a login's without their chain."""
    try:
        yield
    except (poplib.error_proto, OSError, EOFError) as exc:
        error = pop_error(exc, what, login=login)
        if login is not None or error.code is ErrorCode.CERTIFICATE:
            raise error from None
        raise error from exc

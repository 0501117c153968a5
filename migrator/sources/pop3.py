"""POP3 source adapter (RFC 1939): one folder, the Inbox, read without deleting.

Messages are listed with LIST and UIDL, and their Date and Message-ID read with
TOP n 0, so the copier can order them newest first.  POP3 has no UIDs of the IMAP
kind: each message's checkpoint id is derived from its UIDL (stable across
sessions, RFC 1939 section 7), or from Message-ID and size where the server has
no UIDL.
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

from migrator.batch import MailboxJob, TlsMode
from migrator.errors import LoginFailed, PermanentError, TransientError
from migrator.imapconn import ConnectOptions, header_fields, tls_context
from migrator.plan import MessageKey, MessageRef, message_key
from migrator.sources.base import SourceFolder
from migrator.sources.imap import parse_date

# RFC 1939 section 7: a greeting with a timestamp such as <1896.697170952@dbc.mtview.ca.us>
_APOP_TIMESTAMP = re.compile(rb"<[^<>@\s]+@[^<>\s]+>")
INBOX = SourceFolder(name="INBOX", path=("INBOX",))
POP3_UIDVALIDITY = 0  # POP3 ids never change meaning: one fixed validity


class Pop3Source:
    def __init__(self, job: MailboxJob, options: ConnectOptions) -> None:
        self._job = job
        self._what = f"source mailbox {job.source_identity} ({job.source_server})"
        self._numbers: dict[int, int] = {}  # checkpoint id -> message number in this session
        self._headers: dict[int, bytes] = {}  # checkpoint id -> header block (from TOP n 0)
        self._conn = self._connect(options)

    # -- connection ----------------------------------------------------------------------

    def _connect(self, options: ConnectOptions) -> poplib.POP3:
        server = self._job.source_server
        context = tls_context(options)
        with _pop_errors(self._what):
            conn: poplib.POP3
            if server.tls is TlsMode.IMPLICIT:
                conn = poplib.POP3_SSL(
                    server.host, server.port, timeout=options.timeout, context=context
                )
            else:
                conn = poplib.POP3(server.host, server.port, timeout=options.timeout)
                capabilities = _capabilities(conn)
                if "STLS" in capabilities:
                    conn.stls(context)  # RFC 2595
                elif not options.allow_plaintext:
                    _quit(conn)
                    raise PermanentError(
                        f"{self._what}: server offers no STLS; use pop3s:// or allow plaintext"
                    )
        try:
            self._login(conn)
        except BaseException:
            _quit(conn)
            raise
        return conn

    def _login(self, conn: poplib.POP3) -> None:
        credentials = self._job.source_credentials
        password = credentials.password.reveal()
        who = credentials.login + (f" as {credentials.authzid}" if credentials.authzid else "")
        try:
            if credentials.authzid:
                # RFC 5034 AUTH PLAIN with an authorization identity (RFC 4616).
                token = "\0".join([credentials.authzid, credentials.login, password])
                encoded = base64.b64encode(token.encode("utf-8")).decode("ascii")
                # poplib has no SASL helper; _shortcmd sends one line and checks +OK.
                conn._shortcmd(f"AUTH PLAIN {encoded}")  # type: ignore[attr-defined]
            elif not _apop(conn, credentials.login, password):
                conn.user(credentials.login)
                conn.pass_(password)
        except poplib.error_proto as exc:
            raise LoginFailed(f"{self._what}: login {who} refused: {_text(exc)}") from None
        except OSError as exc:
            raise TransientError(f"{self._what}: connection lost during login: {exc}") from exc

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
            self._headers.clear()
            seen: Counter[MessageKey] = Counter()
            for number, size in sizes.items():
                lines = self._conn.top(number, 0)[1]
                while lines and not lines[-1]:
                    lines.pop()
                # The header block as IMAP's BODY[HEADER] gives it: with the empty line.
                header = b"\r\n".join(lines) + b"\r\n\r\n"
                message_id, date_text = header_fields(
                    {b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)]": header}
                )
                key = message_key(message_id, size, None if message_id else header)
                if uidls is not None and number in uidls:
                    uid = _checkpoint_id(uidls[number])
                else:
                    # Without UIDL: the key, and which copy of it this is.
                    seen[key] += 1
                    uid = _checkpoint_id(f"{key[1]}|{key[2]}|{seen[key]}")
                self._numbers[uid] = number
                self._headers[uid] = header
                refs.append(
                    MessageRef(
                        folder=INBOX.name,
                        uidvalidity=POP3_UIDVALIDITY,
                        uid=uid,
                        size=size,
                        internaldate=None,
                        date_header=parse_date(date_text),
                        key=key,
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

    def headers(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            if ref.uid in self._headers:
                yield ref, self._headers[ref.uid]

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


def _checkpoint_id(text: str) -> int:
    """A stable positive 63-bit id for the checkpoint, from a UIDL or key."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:15], 16)


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


@contextlib.contextmanager
def _pop_errors(what: str) -> Iterator[None]:
    """poplib and socket errors -> ours, at one spot."""
    try:
        yield
    except (PermanentError, TransientError):
        raise
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(
            f"{what}: TLS certificate not trusted: {exc.verify_message}; "
            "give --ca-file, or --insecure to skip the check"
        ) from None
    except (OSError, EOFError) as exc:
        raise TransientError(f"{what}: connection lost: {exc}") from exc
    except poplib.error_proto as exc:
        text = _text(exc)
        if text == "-ERR EOF":
            # poplib's own words for a connection closed mid-answer, not the server's.
            raise TransientError(f"{what}: connection lost: {text}") from exc
        if "[IN-USE]" in text.upper() or "[SYS/TEMP]" in text.upper():  # RFC 2449 / 3206
            raise TransientError(f"{what}: server busy: {text}") from exc
        raise PermanentError(f"{what}: {text}") from exc

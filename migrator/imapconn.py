"""IMAP connections for both sides: TLS, login methods, and the one place where
imapclient/imaplib/socket errors become migrator errors."""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import imaplib
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from migrator.batch import Credentials, ServerAddress, TlsMode
from migrator.errors import (
    LoginFailed,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.plan import MessageKey, message_key


@dataclass(frozen=True)
class ConnectOptions:
    timeout: float = 60.0
    ca_file: str | None = None  # extra CA bundle (a private CA); system CAs otherwise
    insecure: bool = False  # skip certificate checks: only by the operator's explicit choice
    allow_plaintext: bool = False  # allow a server that offers no STARTTLS


def tls_context(options: ConnectOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.ca_file)
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# RFC 5530 response codes that mean "try again later" rather than "never".
_TRANSIENT_CODES = ("[UNAVAILABLE]", "[INUSE]", "[SERVERBUG]", "[LIMIT]")


@contextlib.contextmanager
def imap_errors(what: str) -> Iterator[None]:
    """Translate imapclient/imaplib/socket errors raised inside into migrator errors.

    `what` names the mailbox/folder/message, so the error is useful on its own.  The
    server's words are kept; the command (which may hold a password) never is.
    """
    try:
        yield
    except (PermanentError, TransientError):
        raise
    except LoginError as exc:
        raise LoginFailed(f"{what}: login refused: {_server_text(exc)}") from None
    except ssl.SSLCertVerificationError as exc:
        # Retrying cannot make an untrusted certificate trusted.
        raise PermanentError(
            f"{what}: TLS certificate not trusted: {exc.verify_message}; "
            "give --ca-file, or --insecure to skip the check"
        ) from None
    except (IMAPClientAbortError, imaplib.IMAP4.abort, OSError, EOFError) as exc:
        # abort = BYE or a broken connection; OSError covers resets, timeouts and TLS.
        raise TransientError(f"{what}: connection lost: {_server_text(exc)}") from exc
    except (IMAPClientError, imaplib.IMAP4.error) as exc:
        text = _server_text(exc)
        if "[OVERQUOTA]" in text.upper():
            raise QuotaExceeded(f"{what}: target is over quota: {text}") from exc
        if any(code in text.upper() for code in _TRANSIENT_CODES):
            raise TransientError(f"{what}: server busy: {text}") from exc
        raise PermanentError(f"{what}: {text}") from exc


def as_text(value: object) -> str:
    """imapclient gives names and flags as bytes or str; ours are str."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _server_text(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text[:300]


def connect(
    server: ServerAddress, credentials: Credentials, options: ConnectOptions, *, what: str
) -> IMAPClient:
    """A logged-in client, over TLS unless the operator allowed plaintext."""
    context = tls_context(options)
    with imap_errors(f"{what} ({server})"):
        client = IMAPClient(
            server.host,
            port=server.port,
            ssl=server.tls is TlsMode.IMPLICIT,
            ssl_context=context,
            timeout=options.timeout,
        )
        try:
            client.normalise_times = False  # keep INTERNALDATE's own time zone
            _no_delay(client)
            _quiet(client)
            if server.tls is TlsMode.STARTTLS:
                if client.has_capability("STARTTLS"):
                    client.starttls(context)
                elif not options.allow_plaintext:
                    raise PermanentError(
                        f"{what} ({server}): server offers no STARTTLS; "
                        "use imaps:// or allow plaintext explicitly"
                    )
            _login(client, credentials, f"{what} ({server})")
        except BaseException:
            with contextlib.suppress(Exception):
                client.shutdown()
            raise
    return client


def _login(client: IMAPClient, credentials: Credentials, where: str) -> None:
    """Log in with the mechanism that carries the password as it is: a non-ASCII one goes
    as UTF-8 (imaplib encodes commands as ASCII, and would fail with the whole command,
    password included, in its error)."""
    login, authzid = credentials.login, credentials.authzid
    password = credentials.password.reveal()
    try:
        ascii_only = (login + password).isascii()
        if authzid or (not ascii_only and client.has_capability("AUTH=PLAIN")):
            # RFC 4616 SASL PLAIN, in UTF-8: with an authorization identity, authenticate
            # as the admin and act as the user.
            message = f"{authzid or ''}\0{login}\0{password}".encode()
            client.sasl_login("PLAIN", lambda _challenge: message)
        elif ascii_only:
            client.login(login, password)
        else:
            _login_with_literals(client, login, password)
    except (LoginError, IMAPClientError, imaplib.IMAP4.error) as exc:
        who = login + (f" as {authzid}" if authzid else "")
        raise LoginFailed(f"{where}: login {who} refused: {_server_text(exc)}") from None


def _login_with_literals(client: IMAPClient, login: str, password: str) -> None:
    """LOGIN for a server without AUTH=PLAIN: an 8-bit login or password goes as a literal
    (RFC 3501 section 4.3: a literal holds any octets; RFC 6855 says UTF-8).  imapclient's
    `_raw_command` is how it sends literals itself (multi-append, SEARCH with a charset)."""
    typ, data = client._raw_command(b"LOGIN", [_astring(login), _astring(password)], uid=False)
    if typ != "OK":
        raise LoginError(as_text(data[-1] if data else b"no reason given"))
    client._imap.state = "AUTH"  # what imaplib's own login() sets


def _astring(text: str) -> bytes:
    """An ASCII value as a quoted string; any other as its UTF-8 bytes, which imapclient's
    `_raw_command` sends as a literal."""
    data = text.encode("utf-8")
    if not data.isascii():
        return data
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _no_delay(client: IMAPClient) -> None:
    """imaplib writes a command in pieces (line, literal, CRLF); with Nagle's algorithm
    each small piece waits for the server's delayed ACK, some 40 ms a message over a
    real network.  Send each piece at once."""
    with contextlib.suppress(OSError):
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _quiet(client: IMAPClient) -> None:
    """imapclient sets imaplib's debug level to 5, so imaplib formats the repr of every
    line and every FETCH literal (whole message bodies, twice) for a log record that is
    then dropped: a quarter of the copier's CPU.  Level 0 builds no such strings.
    imaplib's `debug` attribute is public; imapclient only exposes the object as `_imap`."""
    client._imap.debug = 0


def logout(client: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        client.logout()
    with contextlib.suppress(Exception):
        client.shutdown()


_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)

KEY_FETCH_ITEMS = ["RFC822.SIZE", "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]"]
_KEY_RESPONSE = b"BODY[HEADER.FIELDS (MESSAGE-ID DATE)]"


def header_fields(data: dict[bytes, Any]) -> tuple[str | None, str | None]:
    """Message-ID and Date from a FETCH of KEY_FETCH_ITEMS."""
    return message_fields(data.get(_KEY_RESPONSE) or b"")


def message_fields(raw: bytes) -> tuple[str | None, str | None]:
    """Message-ID and Date from the header lines `raw`."""
    fields = _plain_fields(raw)
    if fields is None:
        headers = _HEADER_PARSER.parsebytes(raw)
        fields = headers.get("Message-ID"), headers.get("Date")
    message_id, date = fields
    return _first_msgid(message_id), (str(date) if date is not None else None)


# A field line as the email package's header parser takes one: a name, then a colon.
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+:")


def _plain_fields(raw: bytes) -> tuple[str | None, str | None] | None:
    """Message-ID and Date of a plain header block (ASCII, every line a field or the
    continuation of one), exactly as `_HEADER_PARSER` reads them, at a tenth of its
    cost (it is run on every message listed); None for any other block, left to it."""
    if not raw.isascii():
        return None
    found: dict[str, str] = {}
    name: str | None = None
    value: list[str] = []
    # bytes.splitlines breaks at \r\n, \r and \n only, the line ends the email package
    # knows (str.splitlines knows more).
    for raw_line in raw.splitlines(keepends=True):
        line = raw_line.decode("ascii")
        if line[0] in " \t":
            if name is None:
                return None
            value.append(line)
            continue
        if name is not None:
            found.setdefault(name, "".join(value).rstrip("\r\n"))
            name = None
        if line in ("\r\n", "\n", "\r"):
            break
        match = _FIELD_NAME.match(line)
        if match is None:
            return None
        name = line[: match.end() - 1].lower()
        value = [line[match.end() :].lstrip(" \t")]
    if name is not None:
        found.setdefault(name, "".join(value).rstrip("\r\n"))
    return found.get("message-id"), found.get("date")


def _first_msgid(value: object) -> str | None:
    if value is None:
        return None
    text = " ".join(str(value).split())
    start = text.find("<")
    end = text.find(">", start + 1)
    if start != -1 and end != -1:
        return text[start : end + 1]
    return text or None


def keys_for_folder(
    client: IMAPClient, *, what: str
) -> dict[int, tuple[MessageKey, dict[bytes, Any]]]:
    """Key (Message-ID and size, or header hash and size) of every message in the
    selected folder, with the raw FETCH data for other uses."""
    with imap_errors(what):
        uids = client.search("ALL")
        fetched: dict[int, dict[bytes, Any]] = client.fetch(uids, KEY_FETCH_ITEMS) if uids else {}
        ids = {uid: header_fields(data)[0] for uid, data in fetched.items()}
        without_id = [uid for uid, message_id in ids.items() if message_id is None]
        headers: dict[int, dict[bytes, Any]] = (
            client.fetch(without_id, ["BODY.PEEK[HEADER]"]) if without_id else {}
        )
    result: dict[int, tuple[MessageKey, dict[bytes, Any]]] = {}
    for uid, data in fetched.items():
        message_id = ids[uid]
        block = headers.get(uid, {}).get(b"BODY[HEADER]") if message_id is None else None
        result[uid] = (message_key(message_id, int(data[b"RFC822.SIZE"]), block), data)
    return result

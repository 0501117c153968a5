"""IMAP connections for both sides: TLS, login methods, and the one place where
imapclient/imaplib/socket errors become migrator errors."""

from __future__ import annotations

import contextlib
import imaplib
import socket
import ssl
from collections.abc import Iterator
from datetime import datetime

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from migrator.connectors.imap.listing import FIELDS_ITEM, Listed, RawFetch, parse_listing
from migrator.connectors.tls import tls_context
from migrator.errors import (
    LoginFailed,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.model import ConnectOptions, Credentials, ServerAddress, TlsMode

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


def fetch_all(client: IMAPClient, items: str, item: bytes) -> dict[int, Listed]:
    """UID FETCH 1:* of `items` (UID, INTERNALDATE, RFC822.SIZE, FLAGS and one header item,
    `item` as the server names it in the answer) in the selected folder, read with
    `listing.parse_listing` (an eighth of the CPU of imapclient's general parser), or
    with imapclient's parser where the answer holds anything that reader does not
    expect.  imaplib's public `uid` runs the command: imapclient would take "1:*" for
    one UID, and needs a SEARCH first."""
    typ, data = client._imap.uid("FETCH", "1:*", items)
    if typ != "OK":
        raise IMAPClientError(f"fetch failed: {as_text(data[0] if data else '')}")
    return read_listing(data, item)


def read_listing(data: RawFetch, item: bytes = FIELDS_ITEM) -> dict[int, Listed]:
    """A listing FETCH's answers by UID: the fast reading, else imapclient's."""
    listed = parse_listing(data, item)
    if listed is not None:
        return listed
    parsed = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
    return {
        int(uid): Listed(
            uid=int(uid),
            size=int(d[b"RFC822.SIZE"]),
            internaldate=_aware(d.get(b"INTERNALDATE")),
            flags=tuple(as_text(f) for f in d.get(b"FLAGS", ())),
            fields=d.get(item),
        )
        for uid, d in parsed.items()
    }


def _aware(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None

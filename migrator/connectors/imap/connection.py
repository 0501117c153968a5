"""IMAP connections for both sides: TLS, login methods, and the one place where
imapclient/imaplib/socket errors become migrator errors."""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
from collections.abc import Iterator
from datetime import datetime

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.response_parser import parse_fetch_response

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.bodies import BODY_ITEM, parse_bodies
from migrator.connectors.imap.listing import FIELDS_ITEM, Listed, RawFetch, parse_listing
from migrator.connectors.tls import lost_code, tls_context, untrusted
from migrator.errors import (
    ErrorCode,
    FolderRefused,
    LoginFailed,
    MigrationError,
    PermanentError,
    QuotaExceeded,
    TokenRefused,
    TransientError,
)
from migrator.logingate import hold_login
from migrator.model import ConnectOptions, Credentials, Login, ServerAddress, TlsMode, TokenLogin
from migrator.oauth.login import bearer_login
from migrator.oauth.sasl import (
    EXCHANGE_NOT_CONNECTED,
    BearerExchange,
    choose_mechanism,
    initial_response,
    refusal_advice,
)
from migrator.secrets import Secret

# RFC 5530 response codes (and RFC 3501's TRYCREATE): which of our errors each one is.
_RESPONSE_CODES: dict[str, tuple[type[MigrationError], ErrorCode]] = {
    "UNAVAILABLE": (TransientError, ErrorCode.UNAVAILABLE),
    "INUSE": (TransientError, ErrorCode.INUSE),
    "SERVERBUG": (TransientError, ErrorCode.SERVERBUG),
    # A server limit; met at APPEND, the target takes it for that message's refusal.
    "LIMIT": (TransientError, ErrorCode.LIMIT),
    "OVERQUOTA": (QuotaExceeded, ErrorCode.OVERQUOTA),
    "AUTHENTICATIONFAILED": (LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
    "AUTHORIZATIONFAILED": (LoginFailed, ErrorCode.AUTHORIZATIONFAILED),
    "ALREADYEXISTS": (PermanentError, ErrorCode.ALREADYEXISTS),
    "NONEXISTENT": (PermanentError, ErrorCode.NONEXISTENT),
    "TRYCREATE": (PermanentError, ErrorCode.NONEXISTENT),
}

# Where imaplib and imapclient put the server's resp-text in an error's message: all of it
# ("[CODE] text", imaplib's login and authenticate), after imapclient's "<command> failed: ",
# or in imaplib's "<COMMAND> command error: BAD [b'...']".
_RESPONSE_CODE = re.compile(
    r"""(?:[^:\[]* failed: |\w+ command error: (?:BAD|NO) \[b['"])?\[([A-Za-z0-9/-]+)[\] ]"""
)


def response_code(text: str) -> str | None:
    """The response code (RFC 3501 resp-text-code, e.g. "OVERQUOTA") of the server answer
    in an imaplib/imapclient error's `text`, upper-cased; None if the answer has none."""
    match = _RESPONSE_CODE.match(text)
    return match.group(1).upper() if match else None


def imap_error(exc: BaseException, what: str, *, login: str | None = None) -> MigrationError:
    """The migrator error, with its code, for an imapclient/imaplib/socket error: the one
    place where they become ours.  `what` names the mailbox/folder/message; `login` names
    who was logging in when `exc` answers a login.  The server's words are kept, the
    command (which may hold a password) never is."""
    if isinstance(exc, MigrationError):
        return exc
    if isinstance(exc, ssl.SSLCertVerificationError):
        return untrusted(exc, what)
    text = _server_text(exc)
    if isinstance(exc, imaplib.IMAP4.abort | OSError | EOFError):
        # abort = BYE or a broken connection; OSError covers resets, timeouts and TLS.
        return TransientError(f"{what}: connection lost: {text}", code=lost_code(exc))
    if not isinstance(exc, imaplib.IMAP4.error):
        raise exc  # not imaplib's: nothing to translate
    if EXCHANGE_NOT_CONNECTED.lower() in text.lower():
        # Exchange Online takes an app's token, then answers every command after with these
        # words and no response code: the app has no permission on the mailbox.
        advice = refusal_advice("microsoft", "imap", "the mailbox", text)
        return TokenRefused(f"{what}: {text}; {advice}")
    kind, code = _RESPONSE_CODES.get(response_code(text) or "", (PermanentError, ErrorCode.REFUSED))
    if kind is TransientError:
        return TransientError(f"{what}: server busy: {text}", code=code)
    if login is not None or isinstance(exc, LoginError):
        who = f"login {login} refused" if login else "login refused"
        if kind is not LoginFailed:
            code = ErrorCode.AUTHENTICATIONFAILED
        return LoginFailed(f"{what}: {who}: {text}", code=code)
    if kind is QuotaExceeded:
        return QuotaExceeded(f"{what}: target is over quota: {text}", code=code)
    return PermanentError(f"{what}: {text}", code=code)


@contextlib.contextmanager
def imap_errors(what: str, *, login: str | None = None) -> Iterator[None]:
    """Translate imapclient/imaplib/socket errors raised inside into migrator errors
    (imap_error); with `login`, errors of a login, whose chain is dropped: a library may
    quote the command it failed on, password and all."""
    try:
        yield
    except (imaplib.IMAP4.error, OSError, EOFError) as exc:
        error = imap_error(exc, what, login=login)
        hide = login is not None or isinstance(error, LoginFailed)
        if hide or error.code is ErrorCode.CERTIFICATE:
            raise error from None
        raise error from exc


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
    server: ServerAddress, credentials: Login, options: ConnectOptions, *, what: str
) -> IMAPClient:
    """A logged-in client, over TLS unless the operator allowed plaintext."""
    context = tls_context(options)
    with imap_errors(f"{what} ({server})"):
        client = imapwire.GreetedClient(
            server.host,
            port=server.port,
            ssl=server.tls is TlsMode.IMPLICIT,
            ssl_context=context,
            timeout=options.timeout,
        )
        try:
            client.normalise_times = False  # keep INTERNALDATE's own time zone
            _no_delay(client)
            imapwire.quiet(client)  # imaplib's debug strings: a quarter of the CPU
            if server.tls is TlsMode.STARTTLS:
                if imapwire.offers(client, "STARTTLS"):
                    client.starttls(context)
                elif not options.allow_plaintext:
                    raise PermanentError(
                        f"{what} ({server}): server offers no STARTTLS; "
                        "use imaps:// or allow plaintext explicitly",
                        code=ErrorCode.NOTLS,
                    )
            hold_login()  # a source opened beside its target: until the target is open
            if isinstance(credentials, TokenLogin):
                _token_login(client, credentials, server, f"{what} ({server})")
            else:
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
    who = login + (f" as {authzid}" if authzid else "")
    with imap_errors(where, login=who):
        ascii_only = (login + password).isascii()
        if authzid or (not ascii_only and client.has_capability("AUTH=PLAIN")):
            # RFC 4616 SASL PLAIN, in UTF-8: with an authorization identity, authenticate
            # as the admin and act as the user.
            message = f"{authzid or ''}\0{login}\0{password}".encode()
            if client.has_capability("SASL-IR"):
                typ, data = imapwire.authenticate_ir(client, "PLAIN", message)
                if typ != "OK":  # worded as imapclient's sasl_login() words it
                    raise LoginError(f"authenticate failed: {_said(data)}")
            else:
                client.sasl_login("PLAIN", lambda _challenge: message)
        elif ascii_only:
            client.login(login, password)
        else:
            _login_with_literals(client, login, password)


def _token_login(client: IMAPClient, login: TokenLogin, server: ServerAddress, where: str) -> None:
    """AUTHENTICATE OAUTHBEARER (RFC 7628), or XOAUTH2 where that is all the server has."""
    offered = [m for m in ("OAUTHBEARER", "XOAUTH2") if imapwire.offers(client, f"AUTH={m}")]
    mechanism = choose_mechanism(offered)
    if mechanism is None:
        raise LoginFailed(
            f"{where}: the server offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2: "
            "it takes no OAuth 2.0 token"
        )

    def attempt(token: Secret) -> str | None:
        initial = initial_response(mechanism, login.login, token.reveal(), server.host, server.port)
        try:
            client.sasl_login(mechanism, BearerExchange(mechanism, initial))
        except (imaplib.IMAP4.abort, OSError, EOFError) as exc:
            # The connection broke, not the token: a transient error, never a refusal.
            raise imap_error(exc, where, login=login.login) from None
        except (LoginError, IMAPClientError, imaplib.IMAP4.error) as exc:
            return _server_text(exc)
        return None

    bearer_login(login, attempt, protocol="imap", where=where)


def _login_with_literals(client: IMAPClient, login: str, password: str) -> None:
    """LOGIN for a server without AUTH=PLAIN: an 8-bit login or password goes as a literal
    in UTF-8 (imapwire.login_literal)."""
    typ, data = imapwire.login_literal(client, login, password)
    if typ != "OK":
        raise LoginError(_said(data))


def _said(data: list[bytes]) -> str:
    """The text of a refused login's tagged answer."""
    return as_text(data[-1] if data else b"no reason given")


def _no_delay(client: IMAPClient) -> None:
    """imaplib writes a command in pieces (line, literal, CRLF); with Nagle's algorithm
    each small piece waits for the server's delayed ACK, some 40 ms a message over a
    real network.  Send each piece at once."""
    with contextlib.suppress(OSError):
        client.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# A LOGOUT waits this long (seconds) for its answer, not the connection's timeout: a
# session that failed inside a command (an APPEND cut off within its literal, a server
# paused) never answers it, and the mailbox's failure would wait on every such end.
LOGOUT_SECONDS = 5.0


def logout(client: IMAPClient) -> None:
    """End the session politely where it still answers, and close it in any case."""
    with contextlib.suppress(Exception):
        sock = client.socket()
        told = sock.gettimeout()
        sock.settimeout(LOGOUT_SECONDS if told is None else min(told, LOGOUT_SECONDS))
    with contextlib.suppress(Exception):
        client.logout()
    with contextlib.suppress(Exception):
        client.shutdown()


def fetch_all(
    client: IMAPClient, items: str, item: bytes | None, uids: str = "1:*"
) -> dict[int, Listed]:
    """UID FETCH `uids` (all: 1:*) of `items` (UID, INTERNALDATE, RFC822.SIZE, FLAGS and one
    header item, `item` as the server names it in the answer) in the selected folder, read with
    `listing.parse_listing` (an eighth of the CPU of imapclient's general parser), or
    with imapclient's parser where the answer holds anything that reader does not
    expect."""
    typ, data = imapwire.uid_fetch(client, uids, items)
    if typ != "OK":
        raise IMAPClientError(f"fetch failed: {as_text(data[0] if data else '')}")
    return read_listing(data, item)


def read_bodies(data: RawFetch) -> dict[int, bytes]:
    """A BODY_ITEMS FETCH's answers: each message's bytes by UID (one the server did not
    answer for is absent), read with `bodies.parse_bodies`, or with imapclient's parser
    (as its fetch() would) where the answer is not in the usual form (another session's
    flag change in the middle of it, say)."""
    bodies = parse_bodies(data)
    if bodies is not None:
        return bodies
    parsed = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
    return {int(uid): d[BODY_ITEM] for uid, d in parsed.items() if d.get(BODY_ITEM) is not None}


def read_listing(data: RawFetch, item: bytes | None = FIELDS_ITEM) -> dict[int, Listed]:
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
            fields=d.get(item) if item is not None else None,
        )
        for uid, d in parsed.items()
    }


def _aware(value: object) -> datetime | None:
    return value if isinstance(value, datetime) else None


def select_refusal(text: str, what: str) -> MigrationError:
    """The error of a NO (its text) to SELECT or EXAMINE: FolderRefused where it is about
    the folder, as ImapSource's select raises it."""
    error = imap_error(IMAPClientError(f"select failed: {text}"), what)
    if type(error) is PermanentError:
        return FolderRefused(str(error), code=error.code)
    return error

"""A small ManageSieve (RFC 5804) client: TLS, SASL PLAIN and bearer tokens, and the script
commands.

Not sievelib: its STARTTLS takes no ssl.SSLContext, so it cannot verify against a private CA.

Socket and TLS failures and the server's NO and BYE become migrator errors, with their codes,
in `sieve_error()`. Messages hold the server's words, never a command: AUTHENTICATE carries
the password.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TypeAlias

from migrator.connectors.tls import lost_code, untrusted
from migrator.errors import (
    ErrorCode,
    LoginFailed,
    MigrationError,
    PermanentError,
    TransientError,
)
from migrator.secrets import Secret

# RFC 5804 section 4: a quoted string holds at most 1024 octets and no CR, LF or NUL. We send
# '"' and '\' in a literal too, rather than escape them.
_QUOTED_MAX = 1024
_NOT_QUOTABLE = re.compile(rb'["\\\r\n\x00]')
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_UNESCAPE = re.compile(rb"\\(.)")
_LITERAL = re.compile(rb"\{(\d+)\+?\}")  # only ever at the end of a line
_ATOM = re.compile(rb'[^ ()"{]+')
_MAX_LINE = 1 << 20  # a longer line without CRLF is not ManageSieve


class _Atom(str):
    """A bare word in a response (OK, NO, ACTIVE), as opposed to a string ("OK")."""


_Token: TypeAlias = "_Atom | bytes | list[_Token]"  # list: a parenthesised response code


@dataclass(frozen=True)
class Response:
    """A server's answer that ends a command (RFC 5804 section 1.2)."""

    kind: str  # OK, NO or BYE
    code: str  # the response code's first word, e.g. "TRYLATER", "QUOTA/MAXSIZE"; "" if none
    text: str  # the human-readable text on one line; "" if none


@dataclass(frozen=True)
class SieveScript:
    name: str
    active: bool


# RFC 5804 section 1.3 response codes (the first part of a hierarchical one, QUOTA/MAXSIZE):
# which of our errors each is; any other code, or none, is a plain refusal.
_RESPONSE_CODES: dict[str, tuple[type[MigrationError], ErrorCode]] = {
    "TRYLATER": (TransientError, ErrorCode.UNAVAILABLE),
    "QUOTA": (PermanentError, ErrorCode.OVERQUOTA),  # the user's scripts, not the mailbox
    "NONEXISTENT": (PermanentError, ErrorCode.NONEXISTENT),
    "ALREADYEXISTS": (PermanentError, ErrorCode.ALREADYEXISTS),
}


def sieve_error(
    cause: BaseException | Response, where: str, action: str = "", *, login: str | None = None
) -> MigrationError:
    """The migrator error, with its code, for a socket, TLS or end-of-stream error, or for
    the server's NO or BYE to `action`: the one place where they become ours.  `login`
    names who was logging in when `cause` answers AUTHENTICATE."""
    if isinstance(cause, MigrationError):
        return cause
    if isinstance(cause, ssl.SSLCertVerificationError):
        return untrusted(cause, where)
    if isinstance(cause, OSError | EOFError):  # resets, timeouts, TLS alerts, closed streams
        return TransientError(
            f"{where}: connection lost: {cause or type(cause).__name__}", code=lost_code(cause)
        )
    if isinstance(cause, BaseException):
        raise cause  # not a socket's: nothing to translate
    text = cause.text or "no reason given"
    if cause.kind == "BYE":
        return TransientError(
            f"{where}: {action}: server closed the session: {text}", code=ErrorCode.CONNECTION
        )
    known = _RESPONSE_CODES.get(cause.code.split("/")[0])
    kind, code = known or (PermanentError, ErrorCode.REFUSED)
    shown = f" ({cause.code})" if cause.code else ""
    if kind is TransientError:
        return TransientError(f"{where}: {action}: server busy{shown}: {text}", code=code)
    if login is not None:
        return LoginFailed(f"{where}: login {login} refused: {text}")
    return PermanentError(f"{where}: {action} refused{shown}: {text}", code=code)


@contextlib.contextmanager
def _errors(what: str) -> Iterator[None]:
    """Socket, TLS and end-of-stream errors raised inside become migrator errors."""
    try:
        yield
    except (OSError, EOFError) as exc:
        error = sieve_error(exc, what)
        raise error from (None if error.code is ErrorCode.CERTIFICATE else exc)


def _string(text: str) -> bytes:
    """`text` as a ManageSieve string: quoted when safe, else a non-synchronizing literal."""
    data = text.encode("utf-8")
    if len(data) <= _QUOTED_MAX and not _NOT_QUOTABLE.search(data):
        return b'"' + data + b'"'
    return b"{%d+}\r\n" % len(data) + data  # RFC 5804 section 4: servers accept "{N+}"


def _text(token: _Token) -> str:
    return token.decode("utf-8", "replace") if isinstance(token, bytes) else str(token)


def _one_line(text: str) -> str:
    """Dovecot explains a refused script in a multi-line literal; a log line wants one."""
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())[:1000]


class SieveClient:
    """One ManageSieve session; make it with `connect()`, end it with `logout()` or `with`."""

    def __init__(self, sock: socket.socket, what: str) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._what = what
        self._idle = False  # a response came back for every command sent: LOGOUT may follow
        self.capabilities: dict[str, str] = {}

    @classmethod
    def connect(
        cls,
        host: str,
        port: int,
        *,
        context: ssl.SSLContext,
        timeout: float = 60.0,
        implicit_tls: bool = False,
        allow_plaintext: bool = False,
        what: str = "",
    ) -> SieveClient:
        """A session past the greeting, over TLS unless plaintext is allowed and STARTTLS is
        not offered; `capabilities` are the ones sent under TLS. `what` names the mailbox."""
        address = f"sieve://[{host}]:{port}" if ":" in host else f"sieve://{host}:{port}"
        where = f"{what} ({address})" if what else address
        with _errors(where):
            sock = socket.create_connection((host, port), timeout=timeout)
        client = cls(sock, where)
        try:
            with _errors(where):
                # A command goes out in one sendall; do not let Nagle hold it for an ACK.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if implicit_tls:
                    client._sock = context.wrap_socket(sock, server_hostname=host)
            client._read_capabilities("greeting")
            if not implicit_tls:
                if "STARTTLS" in client.capabilities:
                    client._starttls(context, host)
                elif not allow_plaintext:
                    raise PermanentError(
                        f"{where}: server offers no STARTTLS; "
                        "use implicit TLS or allow plaintext explicitly",
                        code=ErrorCode.NOTLS,
                    )
        except BaseException:
            client.close()
            raise
        return client

    def sieve_extensions(self) -> set[str]:
        """The Sieve extensions the server implements, e.g. {"fileinto", "vacation"}."""
        return set(self.capabilities.get("SIEVE", "").split())

    def authenticate(self, login: str, password: Secret, authzid: str | None = None) -> None:
        """SASL PLAIN as `login`; with `authzid`, `login` (an admin) acts as that user."""
        who = login + (f" as {authzid}" if authzid else "")
        # RFC 4616: authzid NUL authcid NUL passwd, sent as the initial response.
        message = f"{authzid or ''}\0{login}\0{password.reveal()}".encode()
        initial = base64.b64encode(message).decode("ascii")
        with _errors(self._what):
            self._send(b'AUTHENTICATE "PLAIN" ' + _string(initial))
            tokens = self._read_tokens()
            if tokens and isinstance(tokens[0], _Atom):
                response = self._response(tokens)
            else:  # a challenge, which PLAIN never needs: cancel it (RFC 5804 section 2.1)
                self._send(b'"*"')
                response = self._read_data_and_response()[1]
        if response.kind != "OK":
            raise sieve_error(response, self._what, "AUTHENTICATE", login=who)

    def sasl_mechanisms(self) -> list[str]:
        return self.capabilities.get("SASL", "").split()

    def authenticate_bearer(self, mechanism: str, exchange: Callable[[bytes], bytes]) -> str | None:
        """SASL `mechanism` (a bearer token, RFC 7628) driven by `exchange`, which answers
        each challenge: None once the server said OK, its words when it said NO."""
        initial = base64.b64encode(exchange(b"")).decode("ascii")
        with _errors(self._what):
            self._send(b"AUTHENTICATE " + _string(mechanism) + b" " + _string(initial))
            while True:
                tokens = self._read_tokens()
                if tokens and isinstance(tokens[0], _Atom):
                    response = self._response(tokens)
                    break
                if not tokens or not isinstance(tokens[0], bytes):
                    raise self._garbled(tokens)
                answer = exchange(base64.b64decode(tokens[0]))
                self._send(_string(base64.b64encode(answer).decode("ascii")))
        if response.kind == "OK":
            return None
        if response.kind == "BYE" or response.code == "TRYLATER":
            self._expect_ok(response, "AUTHENTICATE")  # raises TransientError
        return response.text or "no reason given"

    def list_scripts(self) -> list[SieveScript]:
        return [
            SieveScript(_text(line[0]), any(_text(t).upper() == "ACTIVE" for t in line[1:]))
            for line in self._ok("LISTSCRIPTS")
        ]

    def get_script(self, name: str) -> str:
        """The script exactly as stored: the server's bytes, line endings included."""
        data = self._ok("GETSCRIPT", name, script=name)
        if len(data) != 1 or not isinstance(data[0][0], bytes):
            raise PermanentError(
                f'{self._what}: GETSCRIPT "{name}" gave no script', code=ErrorCode.PROTOCOL
            )
        try:
            return data[0][0].decode("utf-8")
        except UnicodeDecodeError:
            raise PermanentError(
                f'{self._what}: script "{name}" is not UTF-8', code=ErrorCode.PROTOCOL
            ) from None

    def check_script(self, content: str) -> None:
        """Raise PermanentError with the server's explanation if `content` is not valid Sieve.
        Without CHECKSCRIPT (no VERSION capability) it does nothing: PUTSCRIPT checks too."""
        if "VERSION" in self.capabilities:
            self._ok("CHECKSCRIPT", content)

    def put_script(self, name: str, content: str) -> None:
        self._ok("PUTSCRIPT", name, content, script=name)

    def set_active(self, name: str) -> None:
        """Make `name` the active script; "" leaves no script active."""
        self._ok("SETACTIVE", name, script=name)

    def delete_script(self, name: str) -> None:
        self._ok("DELETESCRIPT", name, script=name)

    def logout(self) -> None:
        """LOGOUT and close; after a timeout or garbled reply, only close: no wait for more."""
        try:
            if self._idle:
                self._command("LOGOUT")  # OK or BYE: either way the session is over
        finally:
            self.close()

    def close(self) -> None:
        """Drop the connection without a word to the server."""
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> SieveClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with contextlib.suppress(MigrationError):
            self.logout()

    # -- protocol ---------------------------------------------------------------------------

    def _starttls(self, context: ssl.SSLContext, host: str) -> None:
        self._ok("STARTTLS")
        if self._buffer:  # plaintext sent after the OK would pass for TLS-protected data
            raise PermanentError(
                f"{self._what}: server sent data after STARTTLS", code=ErrorCode.PROTOCOL
            )
        with _errors(self._what):
            self._sock = context.wrap_socket(self._sock, server_hostname=host)
        self._read_capabilities("STARTTLS")  # RFC 5804 section 2.2: sent again under TLS

    def _read_capabilities(self, after: str) -> None:
        with _errors(self._what):
            data, response = self._read_data_and_response()
        self._expect_ok(response, after)
        self.capabilities = {
            _text(line[0]).upper(): _text(line[1]) if len(line) > 1 else "" for line in data
        }

    def _command(self, name: str, *args: str) -> tuple[list[list[_Token]], Response]:
        """Send one command, all literals inline, and read its data lines and response."""
        with _errors(self._what):
            self._send(b" ".join([name.encode(), *map(_string, args)]))
            return self._read_data_and_response()

    def _send(self, line: bytes) -> None:
        self._idle = False
        self._sock.sendall(line + b"\r\n")

    def _ok(self, command: str, *args: str, script: str | None = None) -> list[list[_Token]]:
        """Run `command`, raise unless it ends in OK, and return its data lines."""
        data, response = self._command(command, *args)
        self._expect_ok(response, command if script is None else f'{command} "{script}"')
        return data

    def _expect_ok(self, response: Response, action: str) -> None:
        if response.kind != "OK":
            raise sieve_error(response, self._what, action)

    def _read_data_and_response(self) -> tuple[list[list[_Token]], Response]:
        data: list[list[_Token]] = []
        while True:
            tokens = self._read_tokens()
            if tokens and isinstance(tokens[0], _Atom):
                return data, self._response(tokens)
            if not tokens or not isinstance(tokens[0], bytes):
                raise self._garbled(tokens)
            data.append(tokens)

    def _response(self, tokens: list[_Token]) -> Response:
        kind, rest = _text(tokens[0]).upper(), tokens[1:]
        if kind not in ("OK", "NO", "BYE"):
            raise self._garbled(tokens)
        code = ""
        if rest and isinstance(rest[0], list):
            code = _text(rest[0][0]).upper() if rest[0] else ""
            rest = rest[1:]
        text = _one_line(_text(rest[0])) if rest else ""
        self._idle = True
        return Response(kind, code, text)

    def _garbled(self, tokens: object) -> PermanentError:
        return PermanentError(
            f"{self._what}: not a ManageSieve response: {tokens!r:.200}", code=ErrorCode.PROTOCOL
        )

    def _read_tokens(self) -> list[_Token]:
        """One response line as tokens; a literal continues the line after its data."""
        line, pos = self._readline(), 0
        tokens: list[_Token] = []
        stack = [tokens]
        while True:
            while line[pos : pos + 1] == b" ":
                pos += 1
            char = line[pos : pos + 1]
            if not char:
                if len(stack) > 1:
                    raise self._garbled(line)
                return tokens
            if char == b"(":
                inner: list[_Token] = []
                stack[-1].append(inner)
                stack.append(inner)
                pos += 1
            elif char == b")" and len(stack) > 1:
                stack.pop()
                pos += 1
            elif char == b'"' and (match := _QUOTED.match(line, pos)):
                stack[-1].append(_UNESCAPE.sub(rb"\1", match[1]))
                pos = match.end()
            elif char == b"{" and (match := _LITERAL.fullmatch(line, pos)):
                stack[-1].append(self._read_exact(int(match[1])))
                line, pos = self._readline(), 0
            elif match := _ATOM.match(line, pos):
                stack[-1].append(_Atom(match[0].decode("ascii", "replace")))
                pos = match.end()
            else:
                raise self._garbled(line)

    def _readline(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) == -1:
            if len(self._buffer) > _MAX_LINE:
                raise self._garbled(bytes(self._buffer[:200]))
            self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _read_exact(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        self._buffer += chunk

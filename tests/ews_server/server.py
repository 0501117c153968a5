"""An EWS endpoint over real HTTP on loopback: Basic auth or bearer tokens, impersonation and
delegate rights, schema validation of every request and response, fault injection, dispatch to
operations."""

from __future__ import annotations

import base64
import binascii
import socket
import ssl
import threading
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

from lxml import etree

from . import ops_folders, ops_items, ops_rules, ops_sync
from .context import Context, OpError, SoapFault
from .faults import Faults
from .schema import EwsSchema, load_schema
from .soap import SOAP, M, T, envelope, fault, local
from .store import Store

Operation = Callable[[Context, etree._Element], etree._Element]
OPERATIONS: dict[str, Operation] = {
    **ops_folders.OPERATIONS,
    **ops_items.OPERATIONS,
    **ops_rules.OPERATIONS,
    **ops_sync.OPERATIONS,
}

# Exchange 2016 CU: a build exchangelib maps to API version "Exchange2016" without probing.
SERVER_VERSION = (15, 1, 2, 3, "Exchange2016")
PATH = "/EWS/Exchange.asmx"
VALIDATED_HEADERS = ("RequestServerVersion", "ExchangeImpersonation", "TimeZoneContext")


class EwsServer:
    """A threaded HTTP(S) server speaking EWS SOAP on 127.0.0.1, started by ``start()`` or ``with``.

    Configure from tests: :meth:`add_user`, :meth:`grant_delegate`, ``store`` (mailboxes, with
    ``quota_bytes``), ``max_message_size``, ``faults``. Check with :meth:`assert_no_violations`.
    """

    def __init__(
        self,
        *,
        schema: EwsSchema | None = None,
        max_message_size: int | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """With ``tls`` (a server context holding the certificate) it speaks HTTPS, as
        Exchange does; without, plain HTTP, which the clients must be told to allow."""
        self.tls = tls
        self.schema = schema or load_schema()
        self.store = Store()
        self.faults = Faults()
        self.max_message_size = max_message_size
        self.passwords: dict[str, str] = {}
        # OAuth 2.0: the principal a bearer token stands for (an app's), or None where the
        # token is not good for EWS; None: Basic only.
        self.bearer: Callable[[str], str | None] | None = None
        self.impersonators: set[str] = set()
        self.delegates: dict[str, set[str]] = {}  # user -> mailboxes it may open
        self.violations: list[tuple[str, str]] = []
        self.requests_validated = 0
        self.responses_validated = 0
        self.calls: list[str] = []  # operation names in order, for tests that count round trips
        self.on_stop: list[Callable[[], None]] = []  # e.g. dropping exchangelib's cached sessions
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- configuration -------------------------------------------------------------------------

    def add_user(
        self, smtp: str, password: str, *, mailbox: bool = True, impersonation: bool = False
    ) -> None:
        """An account that can log in; with ``mailbox`` it also owns a mailbox; with
        ``impersonation`` it holds the ApplicationImpersonation role."""
        self.passwords[smtp.lower()] = password
        if mailbox:
            self.store.add_mailbox(smtp)
        if impersonation:
            self.impersonators.add(smtp.lower())

    def grant_delegate(self, user: str, mailbox: str) -> None:
        """Full access for ``user`` on ``mailbox`` (the Mailbox of a DistinguishedFolderId)."""
        self.delegates.setdefault(user.lower(), set()).add(mailbox.lower())

    def may_access(self, principal: str, mailbox: str) -> bool:
        p, mb = principal.lower(), mailbox.lower()
        return p == mb or mb in self.delegates.get(p, set())

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{PATH}"

    def start(self) -> EwsServer:
        handler = type("Handler", (_Handler,), {"ews": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        if self.tls is not None:
            # The handshake runs in accept(); a client that refuses the certificate makes
            # accept() fail, which socketserver takes as a connection that never came.
            self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="ews-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        while self.on_stop:
            self.on_stop.pop()()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> EwsServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- checks --------------------------------------------------------------------------------

    def assert_no_violations(self) -> None:
        assert not self.violations, "EWS schema violations:\n" + "\n".join(
            f"  {op}: {err}" for op, err in self.violations
        )

    def _check(self, op: str, element: etree._Element, direction: str) -> str | None:
        error = self.schema.error(element)
        with self._lock:
            if direction.startswith("request"):
                self.requests_validated += 1
            else:
                self.responses_validated += 1
            if error:
                self.violations.append((op, f"{direction} {local(element)}: {error}"))
        return error

    # -- one call ------------------------------------------------------------------------------

    def authenticate(self, header: str | None) -> str | None:
        """The account named by a valid ``Authorization: Basic`` header, or the principal
        of a good ``Bearer`` token (with ``bearer`` set), else None."""
        if header and header.startswith("Bearer ") and self.bearer is not None:
            return self.bearer(header[7:].strip())
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        expected = self.passwords.get(user.lower())
        return user if expected is not None and expected == password else None

    @property
    def challenge(self) -> str:
        """WWW-Authenticate of a 401: Bearer where tokens are taken (as Exchange Online)."""
        return 'Bearer realm="127.0.0.1"' if self.bearer else 'Basic realm="127.0.0.1"'

    def handle_soap(self, user: str, body: bytes) -> tuple[int, bytes]:
        """Validate, authorize and dispatch one SOAP request; returns (HTTP status, body)."""
        try:
            doc = etree.fromstring(body, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError as exc:
            with self._lock:
                self.violations.append(("?", f"request is not XML: {exc}"))
            return 500, fault("ErrorSchemaValidation", f"The request is not well-formed XML: {exc}")
        soap_body = doc.find(f"{{{SOAP}}}Body")
        request = soap_body[0] if soap_body is not None and len(soap_body) else None
        if request is None or not isinstance(request.tag, str):
            with self._lock:
                self.violations.append(("?", "request has no SOAP Body element"))
            return 500, fault("ErrorSchemaValidation", "The request has no SOAP Body element.")
        op = local(request)
        with self._lock:
            self.calls.append(op)
        headers = doc.find(f"{{{SOAP}}}Header")
        for h in headers if headers is not None else ():
            if (
                isinstance(h.tag, str)
                and etree.QName(h).namespace == T
                and local(h) in VALIDATED_HEADERS
            ):
                error = self._check(op, h, "request header")
                if error:
                    return 500, fault(
                        "ErrorSchemaValidation", f"The request failed schema validation: {error}"
                    )
        error = self._check(op, request, "request")
        if error:
            return 500, fault(
                "ErrorSchemaValidation", f"The request failed schema validation: {error}"
            )
        handler = OPERATIONS.get(op)
        if handler is None or etree.QName(request).namespace != M:
            # Recorded with the violations so a suite that asserts none notices the gap. Not
            # ErrorInvalidRequest: exchangelib takes that for a wrong API version and re-sends.
            with self._lock:
                self.violations.append((op, "operation not implemented by the test server"))
            text = f"The operation {op} is not supported by this test server."
            return 500, fault("ErrorInvalidOperation", text, faultcode="a:ErrorInvalidOperation")
        try:
            ctx = Context(server=self, user=user, principal=self._principal(user, headers))
            with self.store.lock:
                result = handler(ctx, request)
        except (SoapFault, OpError) as exc:  # OpError here: a check outside any response message
            return 500, fault(exc.code, exc.text, faultcode=f"a:{exc.code}")
        self._check(op, result, "response")
        return 200, envelope(result, SERVER_VERSION)

    def _principal(self, user: str, headers: etree._Element | None) -> str:
        imp = headers.find(f"{{{T}}}ExchangeImpersonation") if headers is not None else None
        if imp is None:
            return user
        sid = imp.find(f"{{{T}}}ConnectingSID")
        target = (
            next((c.text for c in sid if isinstance(c.tag, str) and c.text), None)
            if sid is not None
            else None
        )
        if not target:
            raise SoapFault(
                "ErrorImpersonateUserDenied", "The impersonation principal name is invalid."
            )
        if user.lower() not in self.impersonators:
            raise SoapFault(
                "ErrorImpersonateUserDenied",
                f"The account does not have permission to impersonate {target}.",
            )
        if self.store.get(target) is None:
            raise SoapFault(
                "ErrorNonExistentMailbox",
                f"The SMTP address has no mailbox associated with it: {target}",
            )
        return target


class _Handler(BaseHTTPRequestHandler):
    ews: EwsServer
    protocol_version = "HTTP/1.1"  # keep-alive, as exchangelib's requests sessions expect

    def log_message(self, format: str, *args: object) -> None:
        pass  # pytest output stays readable

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path.split("?")[0].lower() != PATH.lower():
            self._send(404, b"Not found", "text/plain")
            return
        user = self.ews.authenticate(self.headers.get("Authorization"))
        if user is None:
            self._send(
                401,
                b"401 - Unauthorized",
                "text/html",
                {"WWW-Authenticate": self.ews.challenge},
            )
            return
        decision = self.ews.faults.next_call()
        if decision.kind == "status":
            # IIS's own error pages; exchangelib retries 500 only when it sees this text.
            text = b"<html><body>Server Error in '/EWS' Application.</body></html>"
            extra = {"Retry-After": str(decision.retry_after)} if decision.retry_after else {}
            if decision.status == 401:
                extra["WWW-Authenticate"] = 'Basic realm="127.0.0.1"'
            self._send(decision.status, text, "text/html", extra)
            return
        if decision.kind == "drop":
            self._drop()
            return
        if decision.kind == "busy":
            text = "The server cannot service this request right now. Try again later."
            payload = fault(
                "ErrorServerBusy",
                text,
                faultcode="a:ErrorServerBusy",
                BackOffMilliseconds=str(decision.back_off_ms),
            )
            self._send(500, payload, "text/xml; charset=utf-8")
            return
        status, payload = self.ews.handle_soap(user, body)
        if decision.kind == "drop_after":
            self._drop()
            return
        self._send(status, payload, "text/xml; charset=utf-8")

    def _drop(self) -> None:
        self.close_connection = True
        with suppress(OSError):  # the client may have gone already
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(
        self, status: int, payload: bytes, ctype: str, extra: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

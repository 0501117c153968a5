"""A Microsoft Graph endpoint over real HTTPS on loopback: bearer tokens checked against
the test OAuth server, every JSON body held to the published v1.0 schema (and importMime
to the README's contract), $batch, per-mailbox quota and size limit, faults, and a count
of the requests in flight per mailbox."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

from . import ops_create, ops_folders, ops_messages, ops_rules
from .context import Call, GraphError, Reply, parse_query
from .faults import Faults
from .schema import GraphSchema, load_schema
from .store import Store

VERSIONS = ("v1.0", "beta")
MAX_BATCH = 20  # json-batching: at most 20 requests in one $batch
# Application permissions (app roles) of a Graph app: mail, and importMime's own.
MAIL_ROLE = "Mail.ReadWrite"
IMPORT_ROLE = "Mail-Advanced.ReadWrite.All"
GRAPH_ROLES = (MAIL_ROLE, IMPORT_ROLE)


class GraphServer:
    """Configure from tests: `add_mailbox`, `deny` (an application access policy),
    `max_message_size`, `faults`; check with `assert_no_violations`."""

    def __init__(self, tls: ssl.SSLContext, introspect: Callable[[str], dict[str, Any]]):
        self.tls = tls
        self.introspect = introspect  # the OAuth server's RFC 7662 answer for a token
        self.schema: GraphSchema = load_schema()
        self.store = Store()
        self.faults = Faults()
        self.max_message_size: int | None = None
        self.denied: set[str] = set()  # mailboxes the app may not open
        # Seconds each request takes, as Exchange's own work does: requests a client sends
        # side by side overlap here, so `max_in_flight` sees them.
        self.latency = 0.0
        self.violations: list[tuple[str, str]] = []
        self.validated = 0
        self.imported = 0
        self.created = 0  # messages made by v1.0 JSON create
        self.upload_sessions: dict[str, Any] = {}  # token -> ops_create.UploadSession
        self.calls: list[str] = []
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # -- configuration and checks --------------------------------------------------------

    def add_mailbox(self, address: str, *, quota_bytes: int | None = None) -> None:
        self.store.add_mailbox(address, quota_bytes)

    def record(self, where: str, text: str) -> None:
        with self._lock:
            self.violations.append((where, text))

    def assert_no_violations(self) -> None:
        assert not self.violations, "Graph schema violations:\n" + "\n".join(
            f"  {where}: {text}" for where, text in self.violations
        )

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def start(self) -> GraphServer:
        handler = type("Handler", (_Handler,), {"graph": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.socket = self.tls.wrap_socket(self._httpd.socket, server_side=True)
        threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="graph-server", daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> GraphServer:
        return self.start()

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- one request -------------------------------------------------------------------------

    def authorize(self, header: str | None) -> set[str]:
        """The app roles of a good bearer token; GraphError 401 otherwise."""
        if not header or not header.startswith("Bearer "):
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        answer = self.introspect(header[7:].strip())
        if not answer.get("active"):
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        return set(str(answer.get("scope", "")).split())

    def handle(
        self, version: str, method: str, target: str, headers: dict[str, str], body: bytes,
        roles: set[str],
    ) -> Reply:  # fmt: skip
        """One request (or one request of a $batch), its answer checked against the schema."""
        parts = urlsplit(target)
        segments = [unquote(s) for s in parts.path.strip("/").split("/") if s]
        where = f"{method} {parts.path}"
        with self._lock:
            self.calls.append(where)
        try:
            if len(segments) < 3 or segments[0].lower() != "users":
                raise GraphError(400, "BadRequest", f"Unsupported segment in {parts.path}.")
            if MAIL_ROLE not in roles:
                raise GraphError(403, "ErrorAccessDenied", "Access is denied. Check credentials.")
            box = self.store.get(segments[1])
            if box is None:
                text = f"The requested user '{segments[1]}' is invalid."
                raise GraphError(404, "ErrorInvalidUser", text)
            if segments[1].lower() in self.denied:
                raise GraphError(403, "ErrorAccessDenied", "Access to OData is disabled.")
            call = Call(self, version, method, segments[2:], parse_query(parts.query),
                        headers, body, box)  # fmt: skip
            if segments[-1] == "importMime" and IMPORT_ROLE not in roles:
                text = "Access is denied. Check credentials and try again."
                raise GraphError(403, "ErrorAccessDenied", text)
            self._check_request(call, where)
            base = f"{self.url}/{version}{parts.path}"
            with self.store.lock:
                reply = self._dispatch(call, base)
        except GraphError as exc:
            return exc.reply()
        self._check_reply(reply, where)
        return reply

    def _dispatch(self, call: Call, base: str) -> Reply:
        seg = call.segments
        if seg[0] == "mailFolders" and len(seg) >= 3 and seg[2] == "messageRules":
            return ops_rules.rules(call)
        if seg[0] == "mailFolders" and len(seg) >= 3 and seg[2] in ("importMime", "messages"):
            return ops_messages.messages(call, base)
        if seg[0] == "mailFolders":
            return ops_folders.folders(call, base)
        if seg[0] == "messages" and len(seg) >= 2:
            return ops_messages.messages(call, base)
        raise GraphError(400, "BadRequest", f"Resource not found for the segment '{seg[0]}'.")

    def _check_request(self, call: Call, where: str) -> None:
        if call.method not in ("POST", "PATCH") or call.segments[-1] == "importMime":
            return
        if call.segments[-1] == "permanentDelete":
            if call.body.strip() not in (b"", b"{}"):
                self.record(where, "permanentDelete takes no body")
            return
        try:
            call.json = json.loads(call.body or b"null")
        except ValueError:
            self.record(where, "request body is not JSON")
            raise GraphError(400, "BadRequest", "The request body is not JSON.") from None
        type_name = _request_type(call.segments)
        if type_name == "createUploadSession":
            body = call.json if isinstance(call.json, dict) else {}
            errors = [
                f"createUploadSession: unknown parameter {k!r}"
                for k in body
                if k != "AttachmentItem"
            ]
            errors += self.schema.check("attachmentItem", body.get("AttachmentItem"))
        else:
            errors = self.schema.check(type_name, call.json)
        with self._lock:
            self.validated += 1
        for error in errors:
            self.record(where, f"request: {error}")
        if errors:
            raise GraphError(400, "RequestBodyRead", f"Invalid request body: {errors[0]}")

    def _check_reply(self, reply: Reply, where: str) -> None:
        if reply.type_name is None or not isinstance(reply.body, dict):
            return
        if reply.collection:
            errors = self.schema.check_collection(reply.type_name, reply.body)
        else:
            errors = self.schema.check(reply.type_name, reply.body)
        with self._lock:
            self.validated += 1
        for error in errors:
            self.record(where, f"response: {error}")

    def batch(self, version: str, data: Any, roles: set[str]) -> Reply:
        requests = data.get("requests") if isinstance(data, dict) else None
        if not isinstance(requests, list) or not requests:
            self.record("$batch", "no 'requests' array")
            raise GraphError(400, "BadRequest", "Invalid batch payload.")
        if len(requests) > MAX_BATCH:
            self.record("$batch", f"{len(requests)} requests in one $batch (at most 20)")
            raise GraphError(400, "BadRequest", "The number of batch requests exceeds 20.")
        responses = []
        for request in requests:
            if set(request) - {"id", "method", "url", "headers", "body", "dependsOn"}:
                self.record("$batch", f"unknown members {sorted(request)}")
            body = request.get("body")
            raw = json.dumps(body).encode() if body is not None else b""
            headers = {k.lower(): v for k, v in (request.get("headers") or {}).items()}
            if body is not None and headers.get("content-type") != "application/json":
                self.record("$batch", "a request with a JSON body and no Content-Type")
            reply = self.handle(version, request.get("method", "GET").upper(),
                                request.get("url", ""), headers, raw, roles)  # fmt: skip
            answer: dict[str, Any] = {"id": request.get("id"), "status": reply.status,
                                      "headers": reply.headers}  # fmt: skip
            if reply.body is not None and not isinstance(reply.body, bytes):
                answer["body"] = reply.body
            responses.append(answer)
        return Reply(200, {"responses": responses})

    def enter(self, mailbox: str) -> None:
        with self._lock:
            self.in_flight[mailbox] += 1
            self.max_in_flight[mailbox] = max(self.max_in_flight[mailbox], self.in_flight[mailbox])

    def leave(self, mailbox: str) -> None:
        with self._lock:
            self.in_flight[mailbox] -= 1


def _request_type(segments: list[str]) -> str:
    if segments[-1] in ("childFolders", "mailFolders"):
        return "mailFolder"
    if segments[-1] == "messageRules":
        return "messageRule"
    if segments[-1] == "attachments":
        return "attachment"
    if segments[-1] == "createUploadSession":
        return "createUploadSession"  # the action's parameters, checked apart
    return "message"


def _mailbox_of(path: str, data: Any) -> str:
    """The mailbox a request works on (a $batch's: its first request's)."""
    if path.endswith("/$batch") and isinstance(data, dict):
        requests = data.get("requests") or [{}]
        path = str(requests[0].get("url", ""))
    parts = [p for p in urlsplit(path).path.split("/") if p]
    if "users" in parts and parts.index("users") + 1 < len(parts):
        return unquote(parts[parts.index("users") + 1]).lower()
    return ""


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that went away (a killed worker, a dropped connection): nothing to say.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    graph: GraphServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        parts = self.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] != "upload":
            self._send(GraphError(405, "BadRequest", "PUT goes to upload URLs only.").reply())
            return
        try:
            reply = ops_create.upload(self.graph, parts[1], headers, body)
        except GraphError as exc:
            reply = exc.reply()
        self.graph._check_reply(reply, "PUT upload")
        self._send(reply)

    def _serve(self, method: str) -> None:
        graph = self.graph
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        version, _, rest = self.path.lstrip("/").partition("/")
        if version not in VERSIONS:
            self._send(GraphError(404, "NotFound", f"No API version {version}.").reply())
            return
        try:
            roles = graph.authorize(headers.get("authorization"))
        except GraphError as exc:
            self._send(exc.reply())
            return
        data = None
        if rest.startswith("$batch"):
            with suppress(ValueError):
                data = json.loads(body or b"null")
        mailbox = _mailbox_of("/" + rest, data)
        decision = graph.faults.decide(rest)
        if decision.kind == "drop":
            self._drop()
            return
        if decision.kind == "status":
            error = GraphError(decision.status, "TooManyRequests" if decision.status == 429
                               else "ServiceUnavailable", "Try again later.",
                               decision.retry_after)  # fmt: skip
            self._send(error.reply())
            return
        graph.enter(mailbox)
        try:
            if graph.latency:
                time.sleep(graph.latency)
            if rest.startswith("$batch"):
                try:
                    reply = graph.batch(version, data, roles)
                except GraphError as exc:
                    reply = exc.reply()
            else:
                reply = graph.handle(version, method, "/" + rest, headers, body, roles)
        finally:
            graph.leave(mailbox)
        if decision.kind == "drop_after":
            self._drop()
            return
        self._send(reply)

    def _drop(self) -> None:
        with suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True

    def _send(self, reply: Reply) -> None:
        if isinstance(reply.body, bytes):
            data, content_type = reply.body, reply.headers.get("Content-Type", "text/plain")
        elif reply.body is None:
            data, content_type = b"", ""
        else:
            data, content_type = json.dumps(reply.body).encode(), "application/json"
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            if name != "Content-Type":
                self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with suppress(OSError):
            self.wfile.write(data)

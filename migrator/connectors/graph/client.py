"""Requests to Microsoft Graph for one mailbox: app-only bearer tokens (renewed once when
refused), Graph's throttling waited out (429 and 503 with Retry-After), at most four
requests in flight per mailbox, the upload budget per mailbox kept across workers, and
JSON batching.  This is the one place where requests' errors and Graph's error answers
become migrator's (`graph_error`)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import requests

from migrator.connectors.base import UploadLedger
from migrator.connectors.graph.settings import GraphSettings
from migrator.errors import (
    ErrorCode,
    FolderRefused,
    MailboxNotReady,
    MessageRefused,
    MigrationError,
    PermanentError,
    QuotaExceeded,
    TokenRefused,
    TransientError,
)
from migrator.oauth import tokens_for
from migrator.secrets import Secret, redact

# Microsoft's published limits for Outlook resources (graph/throttling-limits).
MAX_IN_FLIGHT = 4  # concurrent requests per app and mailbox
UPLOAD_LIMIT = 150 * 1024 * 1024  # bytes of PATCH/POST/PUT per mailbox ...
UPLOAD_WINDOW = 300.0  # ... per 5 minutes
MAX_BATCH = 20  # requests in one $batch
# Throttled answers waited out in a row before the pass gives up (and another retries).
MAX_THROTTLED = 30
DEFAULT_RETRY_AFTER = 5.0  # seconds, where a 429 or 503 names none

logging.getLogger("urllib3.connectionpool").setLevel(logging.WARNING)

_QUOTA_CODES = {"ErrorQuotaExceeded", "QuotaExceededException", "MailboxStoreFull"}
_NOT_READY_CODES = {
    "ErrorInvalidUser", "MailboxNotEnabledForRESTAPI", "MailboxNotSupportedForRESTAPI",
    "ErrorNonExistentMailbox", "ResourceNotFound", "ErrorAccessDenied", "AccessDenied",
    "ErrorMailboxMoveInProgress",
}  # fmt: skip
_SIZE_CODES = {"ErrorMessageSizeExceeded", "RequestEntityTooLarge"}

_gates: dict[str, threading.BoundedSemaphore] = {}
_gates_lock = threading.Lock()


def _gate(mailbox: str) -> threading.BoundedSemaphore:
    """The process's gate of MAX_IN_FLIGHT requests for `mailbox` (a mailbox is copied by
    one worker at a time: its lock; its source and target sides share the gate)."""
    with _gates_lock:
        return _gates.setdefault(mailbox.lower(), threading.BoundedSemaphore(MAX_IN_FLIGHT))


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any  # JSON, or bytes for a stream
    headers: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def graph_error(answer: Answer, what: str) -> MigrationError:
    """Graph's error answer as migrator's error (by status and Graph's own code)."""
    error = answer.body.get("error", {}) if isinstance(answer.body, dict) else {}
    code = str(error.get("code", "")) if isinstance(error, dict) else ""
    said = redact(str(error.get("message", "")) if isinstance(error, dict) else "")[:300]
    text = f"{what}: Graph answered {answer.status} {code}: {said or 'no reason given'}"
    status = answer.status
    if status == 507 or code in _QUOTA_CODES:
        return QuotaExceeded(text)
    if status == 413 or code in _SIZE_CODES:
        return MessageRefused(text, code=ErrorCode.LIMIT)
    if status == 429:
        return TransientError(text, code=ErrorCode.THROTTLED)
    if status >= 500:
        return TransientError(text, code=ErrorCode.UNAVAILABLE)
    if status == 401:
        return TokenRefused(
            f"{text}; grant the app Mail.ReadWrite (and Mail-Advanced.ReadWrite.All for "
            "importMime) with admin consent"
        )
    if code in _NOT_READY_CODES or status == 403:
        return MailboxNotReady(text)
    if status == 409 or code == "ErrorFolderExists":
        return FolderRefused(text, code=ErrorCode.ALREADYEXISTS)
    if status == 404:
        return PermanentError(text, code=ErrorCode.NONEXISTENT)
    return PermanentError(text)


class GraphClient:
    """Graph for one mailbox, from any number of threads."""

    def __init__(
        self,
        settings: GraphSettings,
        mailbox: str,
        uploads: UploadLedger | None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.mailbox = mailbox
        self.base = f"{settings.url}/{{version}}/users/{quote(mailbox, safe='@')}"
        self._tokens = tokens_for(settings.oauth(), settings.connect)
        self._uploads = uploads
        self._budget_name = f"graph:{settings.url}:{mailbox.lower()}"
        self._gate = _gate(mailbox)
        self._sleep = sleep
        self._local = threading.local()  # a requests Session per thread
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self.throttled_seconds = 0.0
        connect = settings.connect
        # Per request: a Session's own `verify` loses to REQUESTS_CA_BUNDLE.
        self._verify: bool | str = False if connect.insecure else (connect.ca_file or True)
        self._timeout = connect.timeout

    # -- one request ---------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        what: str,
        body: Any = None,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        version: str = "v1.0",
        url: str | None = None,
    ) -> Answer:
        """One request (`path` below /users/{mailbox}, or a whole `url` such as a
        nextLink); throttling waited out; a failed answer stays an Answer."""
        target = url or self.base.format(version=version) + path
        sent = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            sent["Content-Type"] = "application/json"
        throttled = 0
        token = self._tokens.token(self.mailbox)
        renewed = False
        while True:
            answer = self._send(method, target, token, sent, data, what)
            if answer.status == 401 and not renewed:
                token, renewed = self._tokens.renew(self.mailbox, token), True
                continue
            if answer.status in (429, 503) and throttled < MAX_THROTTLED:
                throttled += 1
                self.wait(_retry_after(answer.headers))
                continue
            return answer

    def _send(
        self,
        method: str,
        url: str,
        token: Secret,
        headers: dict[str, str],
        data: bytes | None,
        what: str,
    ) -> Answer:
        session = self._session()
        sent = {**headers, "Authorization": f"Bearer {token.reveal()}"}
        try:
            with self._gate:
                response = session.request(
                    method, url, headers=sent, data=data, verify=self._verify, timeout=self._timeout
                )
                content = response.content
        except requests.exceptions.SSLError as exc:
            raise PermanentError(
                f"{what}: Graph's TLS certificate is not trusted ({type(exc).__name__}); "
                "give --ca-file",
                code=ErrorCode.CERTIFICATE,
            ) from None
        except requests.exceptions.RequestException as exc:
            raise TransientError(
                f"{what}: the connection to Graph broke: {type(exc).__name__}",
                code=ErrorCode.CONNECTION,
            ) from None
        kind = response.headers.get("Content-Type", "")
        parsed: Any = content
        if "json" in kind and content:
            try:
                parsed = json.loads(content)
            except ValueError:
                raise TransientError(f"{what}: Graph answered JSON that does not parse") from None
        return Answer(response.status_code, parsed, dict(response.headers))

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(pool_maxsize=MAX_IN_FLIGHT)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def put_range(self, url: str, data: bytes, start: int, total: int, *, what: str) -> Answer:
        """One byte range of an upload session, to its pre-authenticated URL (no token:
        Graph refuses an Authorization header there)."""
        headers = {
            "Content-Range": f"bytes {start}-{start + len(data) - 1}/{total}",
            "Content-Type": "application/octet-stream",
        }
        for _attempt in range(MAX_THROTTLED):
            try:
                with self._gate:
                    response = self._session().put(
                        url, headers=headers, data=data, verify=self._verify, timeout=self._timeout
                    )
            except requests.exceptions.RequestException as exc:
                raise TransientError(
                    f"{what}: the connection to Graph broke: {type(exc).__name__}",
                    code=ErrorCode.CONNECTION,
                ) from None
            body: Any = response.content
            if "json" in response.headers.get("Content-Type", "") and body:
                body = json.loads(body)
            answer = Answer(response.status_code, body, dict(response.headers))
            if answer.status not in (429, 503):
                return answer
            self.wait(_retry_after(answer.headers))
        raise TransientError(f"{what}: Graph kept throttling", code=ErrorCode.THROTTLED)

    def wait(self, seconds: float) -> None:
        with self._lock:
            self.throttled_seconds += seconds
        self._sleep(seconds)

    def call(self, method: str, path: str, *, what: str, **kw: Any) -> Any:
        """A request that must succeed: its body, or the error it is."""
        answer = self.request(method, path, what=what, **kw)
        if not answer.ok:
            raise graph_error(answer, what)
        return answer.body

    def pages(self, path: str, *, what: str) -> Iterator[dict[str, Any]]:
        """Every item of a collection, following @odata.nextLink."""
        body = self.call("GET", path, what=what)
        while True:
            yield from body.get("value", [])
            link = body.get("@odata.nextLink")
            if not link:
                return
            body = self.call("GET", "", what=what, url=str(link))

    # -- uploads and batches -------------------------------------------------------------

    def reserve(self, size: int) -> None:
        """Wait until `size` more bytes fit the mailbox's upload budget (across workers)."""
        if self._uploads is None:
            return
        while True:
            wait = self._uploads.reserve_upload(
                self._budget_name, size, UPLOAD_LIMIT, UPLOAD_WINDOW
            )
            if wait <= 0:
                return
            self.wait(min(wait, UPLOAD_WINDOW))

    def batch(self, requests_: Sequence[dict[str, Any]], *, what: str) -> list[Answer]:
        """Up to 20 small requests (method, url below /users/{mailbox}, body) in one $batch;
        the throttled ones asked again after Retry-After.  One answer each, in order."""
        assert len(requests_) <= MAX_BATCH
        answers: dict[str, Answer] = {}
        pending = {str(n): r for n, r in enumerate(requests_)}
        prefix = f"/users/{quote(self.mailbox, safe='@')}"
        for _round in range(MAX_THROTTLED):
            payload = {"requests": [_batch_request(n, r, prefix) for n, r in pending.items()]}
            body = self.call("POST", "", what=what, body=payload,
                             url=f"{self.settings.url}/v1.0/$batch")  # fmt: skip
            retry_after = 0.0
            for response in body.get("responses", []):
                answer = Answer(int(response.get("status", 0)), response.get("body"),
                                response.get("headers") or {})  # fmt: skip
                key = str(response.get("id"))
                if answer.status in (429, 503):
                    retry_after = max(retry_after, _retry_after(answer.headers))
                    continue
                answers[key] = answer
                pending.pop(key, None)
            if not pending:
                return [answers[str(n)] for n in range(len(requests_))]
            self.wait(retry_after or DEFAULT_RETRY_AFTER)
        raise TransientError(f"{what}: Graph kept throttling", code=ErrorCode.THROTTLED)

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()


def _batch_request(key: str, request: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    sent: dict[str, Any] = {"id": key, "method": request["method"], "url": prefix + request["url"]}
    if request.get("body") is not None:
        sent["body"] = request["body"]
        sent["headers"] = {"Content-Type": "application/json"}
    return sent


def query(**params: str) -> str:
    """OData query options (`select="id"` -> `?$select=id`), percent-encoded."""
    return "?" + urlencode({f"${k}": v for k, v in params.items()}, quote_via=quote)


def _retry_after(headers: Mapping[str, str]) -> float:
    for name, value in headers.items():
        if name.lower() == "retry-after":
            try:
                return max(float(value), 0.0)
            except ValueError:
                break
    return DEFAULT_RETRY_AFTER

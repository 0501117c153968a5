"""The dashboard's web app (Starlette): the page, the JSON it polls, /metrics and
/healthz; GET only.  Off loopback, every request needs the token: as a bearer token
(Prometheus's `authorization`) or as the password of HTTP basic auth (a browser)."""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from migrator.dashboard import views
from migrator.dashboard.metrics import metrics_text
from migrator.errors import ConfigError
from migrator.secrets import Secret
from migrator.state import StateStore

STATIC = Path(__file__).parent / "static"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The page runs only what it was shipped with: no inline script, nothing from elsewhere.
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(store: StateStore, token: Secret | None, interval: float = 2.0) -> Starlette:
    """The app over `store`; with `token`, every request must carry it."""

    def index(_: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    def settings(_: Request) -> Response:
        return JSONResponse({"interval": interval})

    def all_batches(_: Request) -> Response:
        return JSONResponse(views.batches(store))

    def one_batch(request: Request) -> Response:
        return _or_404(lambda: views.batch(store, request.path_params["batch"]))

    def one_mailbox(request: Request) -> Response:
        params = request.path_params
        return _or_404(lambda: views.mailbox(store, params["batch"], params["job"]))

    def mailbox_folders(request: Request) -> Response:
        params = request.path_params
        return _or_404(lambda: {"folders": views.folders(store, params["batch"], params["job"])})

    def metrics(_: Request) -> Response:
        return Response(metrics_text(store), media_type=METRICS_TYPE)

    def healthz(_: Request) -> Response:
        store.client.ping()
        return PlainTextResponse("ok")

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/api/settings", settings, methods=["GET"]),
        Route("/api/batches", all_batches, methods=["GET"]),
        Route("/api/batches/{batch}", one_batch, methods=["GET"]),
        Route("/api/batches/{batch}/mailboxes/{job}", one_mailbox, methods=["GET"]),
        Route("/api/batches/{batch}/mailboxes/{job}/folders", mailbox_folders, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    middleware = [Middleware(BaseHTTPMiddleware, dispatch=_Guard(token))]
    return Starlette(routes=routes, middleware=middleware)


def _or_404(build: Callable[[], dict[str, Any]]) -> Response:
    try:
        return JSONResponse(build())
    except ConfigError as exc:
        return JSONResponse({"error": str(exc)}, status_code=404)


class _Guard:
    """The token check (when there is one) and the security headers on every answer."""

    def __init__(self, token: Secret | None) -> None:
        self._token = token

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        open_path = request.url.path == "/healthz"  # says "ok" and nothing else
        authorization = request.headers.get("authorization")
        if self._token is not None and not open_path and not self._allowed(authorization):
            response: Response = PlainTextResponse("the dashboard needs its token", status_code=401)
            response.headers["WWW-Authenticate"] = 'Basic realm="migrator", charset="UTF-8"'
        else:
            response = await call_next(request)
        response.headers.update(_HEADERS)
        return response

    def _allowed(self, header: str | None) -> bool:
        assert self._token is not None
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        given = value.strip()
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        expected = self._token.reveal().encode("utf-8")
        return hmac.compare_digest(given.encode("utf-8"), expected)


def check_binding(host: str, token: Secret | None) -> None:
    """Loopback by default; anywhere else only with a token."""
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"the dashboard binds to {host} only with a token (--token-file or "
            "MIGRATOR_DASHBOARD_TOKEN): it shows every mailbox of every batch"
        )

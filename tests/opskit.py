"""What the operator tests share: a message the size-limited Dovecot refuses, the
`migrator dashboard` as a process of its own, a headless Chromium from Debian's packages
driven by selenium, where screenshots go (build/test-artifacts, or
$MIGRATOR_TEST_ARTIFACTS), and a webhook receiver and an SMTP sink on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from servers.celery_worker import REPO
from servers.mailgen import make_message
from support import eventually

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def big_message(i: int) -> bytes:
    """A message over the limited Dovecot's 64 KB: the target refuses it ([LIMIT])."""
    raw, _ = make_message(i, folder="INBOX", size_hint=2_000)
    return raw.replace(b"\r\n\r\n", b"\r\n\r\n" + b"padding line\r\n" * 6000, 1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def artifacts() -> Path:
    """Where tests leave what a person looks at afterwards (screenshots)."""
    path = Path(os.environ.get("MIGRATOR_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def answers(url: str) -> bool:
    """Whether anything answers HTTP there (a 401 too: up, and asking for its token)."""
    try:
        requests.get(url, timeout=2)
    except requests.ConnectionError:
        return False
    return True


@contextmanager
def dashboard(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """`migrator dashboard` (as the `migrator` command runs it) on a free loopback port,
    until it answers; its base URL."""
    port = free_port()
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "workers.main", "dashboard", "--port", str(port), *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            eventually(
                lambda: process.poll() is not None or answers(base + "/healthz"),
                timeout=30,
                what="the dashboard answering",
            )
            assert process.poll() is None, log.read_text()
            yield base
        finally:
            process.terminate()
            process.wait(timeout=30)


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless Chromium (Debian's, with its chromedriver) driven by selenium."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     f"--user-data-dir={profile}", "--window-size=1400,1000"):  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()


class WebhookReceiver:
    """An HTTP server on loopback that keeps each JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append({"path": self.path, "body": json.loads(body)})
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self, event: str) -> list[dict[str, Any]]:
        return [r["body"] for r in self.received if r["body"].get("event") == event]


class SmtpSink:
    """An SMTP server on loopback (aiosmtpd) that keeps every message it is given."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        sink = self

        class Handler:
            async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
                raw = envelope.original_content or envelope.content
                message = BytesParser(policy=default).parsebytes(raw)
                sink.messages.append(message)  # type: ignore[arg-type]
                sink.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                return "250 OK"

        self.port = free_port()
        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._controller.stop()

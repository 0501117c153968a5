"""An SMTP server on loopback that keeps what it is given: where Dovecot's Sieve
`redirect` sends mail in the forwarding tests (aiosmtpd, in a thread)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from aiosmtpd.controller import Controller

from .ports import LOOPBACK, free_ports


@dataclass(frozen=True)
class Delivery:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes


class SmtpSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self.port = free_ports(1)[0]
        self._controller = Controller(self, hostname=LOOPBACK, port=self.port)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.content
        delivery = Delivery(
            str(envelope.mail_from),
            tuple(str(r) for r in envelope.rcpt_tos),
            content if isinstance(content, bytes) else str(content).encode("utf-8"),
        )
        with self._lock:
            self._deliveries.append(delivery)
        return "250 OK"

    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, count: int, *, timeout: float = 10.0) -> list[Delivery]:
        """Block until `count` messages have arrived (Sieve redirects are sent at once)."""
        deadline = time.monotonic() + timeout
        while len(self.deliveries()) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.deliveries()

    def __enter__(self) -> SmtpSink:
        self._controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._controller.stop()

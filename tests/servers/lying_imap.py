"""An IMAP server whose RFC822.SIZE is an estimate, as Exchange's IMAP gives it: a TLS
proxy in front of the test Dovecot that rewrites every RFC822.SIZE the server sends and
leaves every other byte alone (literals, message bodies, the client's commands).

No real server here can be made to report a size other than its bytes, so this small
scripted part stands in for one that does (DEVELOPERS.md allows it for such faults).
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Callable
from types import TracebackType

from .certs import TlsFiles
from .ports import LOOPBACK

_SIZE = re.compile(rb"RFC822\.SIZE ([0-9]+)")
_LITERAL = re.compile(rb"\{([0-9]+)\+?\}\r\n$")


def estimate(size: int) -> int:
    """What the lying server says for a message of `size` octets: off by up to 5% and
    some dozens of octets, in either direction, as a size computed from another form."""
    return max(1, size + (size % 37) - 18 + (size // 20 if size % 2 else -(size // 25)))


class SizeLyingImap:
    """Listens with TLS on a free loopback port; every connection goes on to Dovecot's
    IMAPS port with TLS, and each RFC822.SIZE n the server sends becomes lie(n)."""

    def __init__(
        self, imaps_port: int, tls: TlsFiles, lie: Callable[[int], int] = estimate
    ) -> None:
        self._upstream = (LOOPBACK, imaps_port)
        self._lie = lie
        self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_context.load_cert_chain(tls.server_cert, tls.server_key)
        self._client_context = ssl.create_default_context(cafile=tls.ca_cert)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.sizes_rewritten = 0

    def __enter__(self) -> SizeLyingImap:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._closing.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                raw, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self._server_context.wrap_socket(raw, server_side=True)
            upstream = self._client_context.wrap_socket(
                socket.create_connection(self._upstream), server_hostname=LOOPBACK
            )
        except OSError:
            raw.close()
            return
        with self._lock:
            self._sockets |= {client, upstream}
        threading.Thread(target=self._up, args=(client, upstream), daemon=True).start()
        self._down(upstream, client)

    def _up(self, client: socket.socket, upstream: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                upstream.sendall(data)
        with contextlib.suppress(OSError):
            upstream.close()

    def _down(self, upstream: socket.socket, client: socket.socket) -> None:
        """Server to client, line by line; a literal's octets pass untouched."""
        reader = upstream.makefile("rb")
        with contextlib.suppress(OSError, ValueError):
            while line := reader.readline():
                literal = _LITERAL.search(line)
                client.sendall(_SIZE.sub(self._rewrite, line))
                if literal:
                    client.sendall(reader.read(int(literal.group(1))))
        with contextlib.suppress(OSError):
            client.close()

    def _rewrite(self, match: re.Match[bytes]) -> bytes:
        self.sizes_rewritten += 1
        return b"RFC822.SIZE %d" % self._lie(int(match.group(1)))

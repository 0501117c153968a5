"""A loopback TCP proxy that adds a fixed one-way delay, as a network between two sites
would: every chunk is delivered `delay` seconds after it arrived, in order, without
limiting throughput.  TLS passes through it as bytes.  `received` counts the bytes the
server sent through it (what a client read from that server, TLS included)."""

from __future__ import annotations

import contextlib
import heapq
import socket
import threading
import time
from collections.abc import Iterator


class LatencyProxy:
    def __init__(self, target_port: int, delay: float) -> None:
        self._target = ("127.0.0.1", target_port)
        self._delay = delay
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self.received = 0  # bytes from the server, all connections
        self._count = threading.Lock()

    def __enter__(self) -> LatencyProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._pipe(client, upstream)
            self._pipe(upstream, client, counted=True)

    def _pipe(self, source: socket.socket, sink: socket.socket, counted: bool = False) -> None:
        """Read from `source` at once; write each chunk to `sink` after the delay."""
        if self._delay <= 0:
            # No delay (a counter only): each chunk written by the thread that read it.
            # Handing it to a writer thread cost each round trip two thread switches, some
            # milliseconds on a busy machine: ten a TLS handshake, a short pass's fifth.
            def forward() -> None:
                for data in self._chunks(source, counted):
                    if not _deliver(sink, data):
                        return

            threading.Thread(target=forward, daemon=True).start()
            return
        queue: list[tuple[float, int, bytes]] = []
        ready = threading.Condition()
        counter = [0]

        def read() -> None:
            for data in self._chunks(source, counted):
                with ready:
                    counter[0] += 1
                    heapq.heappush(queue, (time.monotonic() + self._delay, counter[0], data))
                    ready.notify()

        def write() -> None:
            while True:
                with ready:
                    while not queue:
                        ready.wait()
                    due, _, data = queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        ready.wait(wait)
                        continue
                    heapq.heappop(queue)
                if not _deliver(sink, data):
                    return

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=write, daemon=True).start()

    def _chunks(self, source: socket.socket, counted: bool) -> Iterator[bytes]:
        """What `source` sends, chunk by chunk, counted where told; b"" last (its end)."""
        while True:
            try:
                data = source.recv(262144)
            except OSError:
                data = b""
            if counted:
                with self._count:
                    self.received += len(data)
            yield data
            if not data:
                return


def _deliver(sink: socket.socket, data: bytes) -> bool:
    """Write `data` to `sink`, or end its writing on b""; False once there is no more to do."""
    if not data:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
        return False
    try:
        sink.sendall(data)
    except OSError:
        return False
    return True

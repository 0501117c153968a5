"""A TCP proxy on a free loopback port that can cut, truncate and stall a connection on command.

It forwards bytes as they are, so TLS passes through it untouched and certificate checks still
hold (the client talks to the real server through it). Faults are armed from the test and fire
once, on whichever connection first moves the given number of bytes in the given direction
after arming:

    drop_after_bytes(n, direction)      forward n more bytes, then reset both sides (RST)
    truncate_after_bytes(n, direction)  forward n more bytes, then close both sides (FIN)
    stall(seconds, after_bytes=n)       forward n more bytes, then hold everything back for a
                                        while (or until release()); then deliver it
                                        (then="forward") or reset
    hold(after_bytes=n, deliver_after=s) forward n more bytes upward, keep what the client
                                        sends after them, reset the client once it waits
                                        for an answer, and deliver the rest to the server s
                                        seconds later: a request the server commits late,
                                        whose sender saw only a reset (`delivered` is set
                                        once the server has answered it)

"up" is client -> server, "down" is server -> client.

Two standing conditions, given when it is made: `latency` delays everything the server
sends by that many seconds (a far server), and `bandwidth` lets through at most that many
bytes a second each way on each connection (a slow link).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType

from .ports import LOOPBACK

UP = "up"
DOWN = "down"


@dataclass
class _Fault:
    kind: str  # "drop", "truncate", "stall" or "hold"
    direction: str
    remaining: int  # bytes still forwarded before it fires
    seconds: float = 0.0
    then: str = "forward"  # after a stall: "forward" what was held back, or "drop" it


# A hold resets the client once it has sent nothing for this long: its request is whole.
_QUIET = 0.5


class TcpProxy:
    """Forwards 127.0.0.1:<port> to (host, target_port), one thread per connection."""

    def __init__(
        self,
        target_port: int,
        *,
        host: str = LOOPBACK,
        latency: float = 0.0,
        bandwidth: float | None = None,
    ) -> None:
        self.target = (host, target_port)
        self.latency = latency
        self.bandwidth = bandwidth
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._fault: _Fault | None = None
        self._closing = threading.Event()
        self._released = threading.Event()  # ends a stall early: set by release() and close()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        # Counters, for tests to prove a fault really happened.
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.faults_fired: list[str] = []
        self.delivered = threading.Event()  # a hold's request reached the server and was answered

    # -- controls -------------------------------------------------------------------------

    def drop_after_bytes(self, n: int, direction: str = DOWN) -> None:
        self._arm(_Fault("drop", direction, n))

    def truncate_after_bytes(self, n: int, direction: str = DOWN) -> None:
        self._arm(_Fault("truncate", direction, n))

    def stall(
        self, seconds: float, *, after_bytes: int = 0, direction: str = DOWN, then: str = "forward"
    ) -> None:
        """Hold the connection still; then deliver what was held back (a slow path that
        recovers) or reset it undelivered (a hung server that is restarted)."""
        if then not in ("forward", "drop"):
            raise ValueError("then must be 'forward' or 'drop'")
        self._arm(_Fault("stall", direction, after_bytes, seconds, then))

    def hold(self, *, after_bytes: int, deliver_after: float) -> None:
        """A middlebox that holds a request: the client's connection is reset while it
        waits for the answer (it cannot know whether the request took effect), and the
        server gets the whole request `deliver_after` seconds after that reset."""
        self._arm(_Fault("hold", UP, after_bytes, deliver_after))

    def release(self) -> None:
        """End a stall now: what it held back goes on (or is reset) at once."""
        self._released.set()

    def armed(self) -> bool:
        with self._lock:
            return self._fault is not None

    def _arm(self, fault: _Fault) -> None:
        if fault.direction not in (UP, DOWN):
            raise ValueError(f"direction must be {UP!r} or {DOWN!r}")
        with self._lock:
            self._fault = fault

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> TcpProxy:
        thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._closing.set()
        self._released.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- forwarding -----------------------------------------------------------------------

    def _accept(self) -> None:
        self._listener.settimeout(0.1)  # closing a socket does not wake accept()
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
                self._sockets.update((client, upstream))
            thread = threading.Thread(
                target=self._pump, args=(client, upstream), name="proxy-conn", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        direction = {client: UP, upstream: DOWN}
        try:
            while not self._closing.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if not self._forward(data, direction[sock], peer[sock], client, upstream):
                        return
        except OSError:
            return
        finally:
            with self._lock:
                self._sockets.difference_update((client, upstream))
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.close()

    def _forward(
        self,
        data: bytes,
        direction: str,
        out: socket.socket,
        client: socket.socket,
        upstream: socket.socket,
    ) -> bool:
        """Send `data` on, applying an armed fault; False when the connection is over."""
        fired: _Fault | None = None
        with self._lock:
            fault = self._fault
            if fault is not None and fault.direction == direction:
                if len(data) >= fault.remaining:
                    fired, self._fault = fault, None
                    self.faults_fired.append(fault.kind)
                else:
                    fault.remaining -= len(data)
            if direction == UP:
                self.bytes_up += len(data)
            else:
                self.bytes_down += len(data)
        if fired is None:
            # The network's delay and its rate, not waits for anything: data arrives late.
            if direction == DOWN and self.latency:
                time.sleep(self.latency)
            if self.bandwidth:
                time.sleep(len(data) / self.bandwidth)
            out.sendall(data)
            return True
        out.sendall(data[: fired.remaining])
        if fired.kind == "hold":
            self._hold(bytearray(data[fired.remaining :]), fired.seconds, client, upstream)
            return False
        if fired.kind == "stall":
            # The rest of this chunk, and everything after, waits until the stall is over.
            self._released.wait(fired.seconds)
            if fired.then == "forward" and not self._closing.is_set():
                out.sendall(data[fired.remaining :])
                return True
        if fired.kind in ("drop", "stall"):
            for sock in (client, upstream):
                _reset_on_close(sock)
        return False

    def _hold(
        self, held: bytearray, seconds: float, client: socket.socket, upstream: socket.socket
    ) -> None:
        # Take in the rest of the client's request until it waits for the answer.
        while not self._closing.is_set():
            readable, _, _ = select.select([client], [], [], _QUIET)
            if not readable:
                break
            data = client.recv(65536)
            if not data:
                break
            held += data
        _reset_on_close(client)
        with contextlib.suppress(OSError):
            client.close()
        if self._closing.wait(seconds):
            return
        upstream.sendall(held)
        readable, _, _ = select.select([upstream], [], [], 30)
        if readable and upstream.recv(65536):
            self.delivered.set()


def _reset_on_close(sock: socket.socket) -> None:
    """SO_LINGER 0: close() sends RST, like a cut network path or a crashed box."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

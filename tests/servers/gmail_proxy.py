"""An IMAP proxy of our own in front of the test Dovecot that answers as Gmail does.

Gmail's IMAP (https://developers.google.com/gmail/imap/imap-extensions) announces
`X-GM-EXT-1` and answers two FETCH items no other server has: `X-GM-MSGID`, one id per
message however many labels (folders) show it, and `X-GM-LABELS`, the labels it carries
(`\\Inbox`, `\\Sent`, `\\Starred`, `\\Important`, `\\Draft`, `\\Spam`, `\\Trash` and the
user's own). Dovecot holds the Gmail-shaped mailbox (tests/gmailkit.py: label folders with
copies of the same messages, `[Gmail]/All Mail` with every message and the archived ones);
this proxy, over TLS with the test CA's certificate, adds to that:

- `X-GM-EXT-1` in every CAPABILITY list (untagged, or as a response code);
- in a FETCH that asks for `X-GM-MSGID`/`X-GM-LABELS`/`X-GM-THRID`: those items taken out
  of the command Dovecot gets (a UID FETCH, so each answer names its UID), and put into
  each answer from the message's content, as Gmail would: the message id is a digest of its
  Message-ID (of its header block where it has none), the labels are those of the folders
  that hold a message with that id (read over a connection of the proxy's own, as the
  account's owner, again whenever a folder changed).

Everything else passes through unchanged, byte for byte (literals included).
`cut_off(after_bytes)` is Gmail past its daily download limit: once that many more bytes
went down, the client gets `* BYE` and the connection closes.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from types import TracebackType

from imapclient import IMAPClient

from .certs import TlsFiles
from .ports import LOOPBACK

CAPABILITY = b"X-GM-EXT-1"
# System labels, by the RFC 6154 (and RFC 8457) flag of the folder that shows them.
LABEL_OF_SPECIAL_USE = {
    b"\\sent": b"\\Sent",
    b"\\drafts": b"\\Draft",
    b"\\flagged": b"\\Starred",
    b"\\important": b"\\Important",
    b"\\junk": b"\\Spam",
    b"\\trash": b"\\Trash",
}
_GM_ITEMS = (b"X-GM-MSGID", b"X-GM-LABELS", b"X-GM-THRID")
_LITERAL = re.compile(rb"\{([0-9]+)\+?\}\r\n$")
_COMMAND = re.compile(rb"^(\S+) (UID )?(FETCH|SELECT|EXAMINE) (.*?)\r\n$", re.IGNORECASE | re.S)
_FETCH_ANSWER = re.compile(rb"^\* [0-9]+ FETCH \(")
_UID = re.compile(rb"\bUID ([0-9]+)")
_CAPABILITY_LINE = re.compile(rb"^(\* CAPABILITY .*?)(\r\n)$", re.IGNORECASE)
_CAPABILITY_CODE = re.compile(rb"(\[CAPABILITY [^\]]*)(\])", re.IGNORECASE)
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(.*?)\r?$", re.IGNORECASE | re.MULTILINE)


def gmail_msgid(header: bytes) -> int:
    """The X-GM-MSGID the proxy gives a message: a 60-bit digest of its Message-ID, or of
    its whole header block where it has none."""
    found = _MESSAGE_ID.search(header)
    basis = found.group(1).strip() if found and found.group(1).strip() else header
    return int(hashlib.sha256(basis).hexdigest()[:15], 16)


@dataclass
class _Index:
    """The account as Gmail would see it: each message's id by (folder, UID), and the
    labels of each id."""

    signature: tuple[object, ...] = ()
    ids: dict[tuple[bytes, int], int] = field(default_factory=dict)
    labels: dict[int, list[bytes]] = field(default_factory=dict)


@dataclass
class _Session:
    selected: bytes | None = None
    selecting: dict[bytes, bytes] = field(default_factory=dict)  # tag -> folder
    asked: dict[bytes, tuple[bytes, ...]] = field(default_factory=dict)  # tag -> X-GM items


class GmailProxy:
    """IMAPS on a free loopback port, for `login` on Dovecot's plain IMAP port behind it."""

    def __init__(
        self, imap_port: int, tls: TlsFiles, login: str, password: str, *, host: str = LOOPBACK
    ) -> None:
        self.upstream = (host, imap_port)
        self._login = (login, password)
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(tls.server_cert, tls.server_key)
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._lock = threading.Lock()
        self._index = _Index()
        self._index_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._sockets: set[socket.socket] = set()
        self._cut_after: int | None = None
        self._cut_every = 0
        self._cuts_left = 0
        # For tests: how many sessions, FETCHes answered with X-GM items, bytes sent down.
        self.connections = 0
        self.gmail_fetches = 0
        self.bytes_down = 0
        self.cut_offs = 0

    @property
    def url(self) -> str:
        return f"imaps://127.0.0.1:{self.port}"

    # -- controls -------------------------------------------------------------------------

    def cut_off(self, after_bytes: int, times: int = 1) -> None:
        """Gmail past its limit: after `after_bytes` more bytes down (on any session), say
        BYE and close that session; `times` times, each `after_bytes` after the last."""
        with self._lock:
            self._cut_after = after_bytes
            self._cut_every = after_bytes
            self._cuts_left = times

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> GmailProxy:
        thread = threading.Thread(target=self._accept, name=f"gmail-{self.port}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._closing.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> GmailProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.1)
        while not self._closing.is_set():
            try:
                raw, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(raw,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, raw: socket.socket) -> None:
        try:
            raw.settimeout(30)
            client = self._context.wrap_socket(raw, server_side=True)
            client.settimeout(None)
            upstream = socket.create_connection(self.upstream, timeout=5)
            upstream.settimeout(None)
        except OSError:
            with contextlib.suppress(OSError):
                raw.close()
            return
        with self._lock:
            self.connections += 1
            self._sockets.update((client, upstream))
        session = _Session()
        down = threading.Thread(
            target=self._down, args=(upstream, client, session), name="gmail-down", daemon=True
        )
        down.start()
        try:
            self._up(client, upstream, session)
        finally:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()
            down.join(timeout=5)
            with self._lock:
                self._sockets.difference_update((client, upstream))

    # -- client -> server -----------------------------------------------------------------

    def _up(self, client: socket.socket, upstream: socket.socket, session: _Session) -> None:
        reader = _Reader(client)
        while not self._closing.is_set():
            line = reader.line()
            if not line:
                return
            literal = _LITERAL.search(line)
            if literal is None:
                line = self._command(line, session)
            upstream.sendall(line)
            while literal is not None:  # a literal, then the rest of the command
                upstream.sendall(reader.exactly(int(literal.group(1))))
                line = reader.line()
                if not line:
                    return
                upstream.sendall(line)
                literal = _LITERAL.search(line)

    def _command(self, line: bytes, session: _Session) -> bytes:
        """The command as Dovecot gets it: a FETCH of X-GM items without them (a UID
        FETCH), noted so their answers get them; a SELECT noted."""
        match = _COMMAND.match(line)
        if match is None:
            return line
        tag, uid, verb, rest = match.groups()
        if verb.upper() in (b"SELECT", b"EXAMINE"):
            name = rest.split(b" (")[0].strip()
            if name.startswith(b'"') and name.endswith(b'"'):
                name = re.sub(rb"\\(.)", rb"\1", name[1:-1])
            with self._lock:
                session.selecting[tag] = name
            return line
        asked = tuple(item for item in _GM_ITEMS if item in rest.upper())
        if not asked:
            return line
        for item in _GM_ITEMS:
            rest = re.sub(rb" ?\b" + item + rb"\b ?", b" ", rest, flags=re.IGNORECASE)
        rest = re.sub(rb"\( +", b"(", re.sub(rb" +\)", b")", rest)).strip()
        rest = re.sub(rb"\(\)", b"(UID)", rest)
        if uid is None:
            # Answers of a UID FETCH name their UID, which the ids are found by; the
            # sequence set stays a sequence set only for a plain FETCH, which we do not use.
            raise AssertionError("the Gmail proxy answers X-GM items in UID FETCH only")
        with self._lock:
            session.asked[tag] = asked
        self._refresh()
        return tag + b" UID FETCH " + rest + b"\r\n"

    # -- server -> client -----------------------------------------------------------------

    def _down(self, upstream: socket.socket, client: socket.socket, session: _Session) -> None:
        reader = _Reader(upstream)
        try:
            while not self._closing.is_set():
                line = reader.line()
                if not line:
                    return
                out = self._answer(line, session)
                literal = _LITERAL.search(line)
                if literal is not None:
                    out += reader.exactly(int(literal.group(1)))
                if not self._send_down(client, out):
                    return
        except OSError:
            return
        finally:
            with contextlib.suppress(OSError):
                client.shutdown(socket.SHUT_RDWR)

    def _send_down(self, client: socket.socket, data: bytes) -> bool:
        with self._lock:
            self.bytes_down += len(data)
            cut = self._cut_after
            if cut is not None:
                if len(data) >= cut:
                    self._cuts_left -= 1
                    self._cut_after = self._cut_every if self._cuts_left > 0 else None
                    self.cut_offs += 1
                else:
                    self._cut_after = cut - len(data)
        if cut is not None and len(data) >= cut:
            client.sendall(data[:cut] + b"\r\n* BYE [ALERT] Download limit exceeded\r\n")
            return False
        client.sendall(data)
        return True

    def _answer(self, line: bytes, session: _Session) -> bytes:
        if line.startswith(b"* "):
            capability = _CAPABILITY_LINE.match(line)
            if capability is not None:
                return capability.group(1) + b" " + CAPABILITY + capability.group(2)
            if session.asked and _FETCH_ANSWER.match(line):
                return self._gmail_items(line, session)
            return _CAPABILITY_CODE.sub(rb"\1 " + CAPABILITY + rb"\2", line)
        tag, _, rest = line.partition(b" ")
        with self._lock:
            selected = session.selecting.pop(tag, None)
            if selected is not None and rest.upper().startswith(b"OK"):
                session.selected = selected
            session.asked.pop(tag, None)
        return _CAPABILITY_CODE.sub(rb"\1 " + CAPABILITY + rb"\2", line)

    def _gmail_items(self, line: bytes, session: _Session) -> bytes:
        found = _UID.search(line)
        with self._lock:
            asked = set().union(*session.asked.values())
            folder = session.selected
        if found is None or folder is None:
            return line
        with self._index_lock:
            msgid = self._index.ids.get((folder, int(found.group(1))))
            labels = self._index.labels.get(msgid, []) if msgid is not None else []
        if msgid is None:
            return line
        items = []
        if b"X-GM-MSGID" in asked:
            items.append(b"X-GM-MSGID %d" % msgid)
        if b"X-GM-THRID" in asked:
            items.append(b"X-GM-THRID %d" % msgid)
        if b"X-GM-LABELS" in asked:
            items.append(b"X-GM-LABELS (" + b" ".join(labels) + b")")
        self.gmail_fetches += 1
        head = _FETCH_ANSWER.match(line)
        assert head is not None
        return line[: head.end()] + b" ".join(items) + b" " + line[head.end() :]

    # -- the account as Gmail sees it -----------------------------------------------------

    def _refresh(self) -> None:
        """Read the account again if any folder changed since it was last read."""
        with self._index_lock, IMAPClient(*self.upstream, ssl=False, timeout=60) as side:
            side.folder_encode = False  # names as on the wire (modified UTF-7)
            side.plain_login(*self._login)  # UTF-8: batch passwords are not ASCII
            folders = [
                (name, {f.lower() for f in flags})
                for flags, _, name in side.list_folders()
                if b"\\noselect" not in {f.lower() for f in flags}
            ]
            status = [
                (name, tuple(sorted(side.folder_status(name, [
                    "MESSAGES", "UIDNEXT", "UIDVALIDITY"]).items())))
                for name, _ in folders
            ]  # fmt: skip
            signature = tuple(status)
            if signature == self._index.signature:
                return
            self._index = _read_account(side, folders, signature)


def _read_account(
    side: IMAPClient, folders: list[tuple[bytes, set[bytes]]], signature: tuple[object, ...]
) -> _Index:
    index = _Index(signature=signature)
    holders: dict[int, list[bytes]] = {}
    for name, flags in folders:
        side.select_folder(name, readonly=True)
        uids = side.search("ALL")
        fetched = side.fetch(uids, ["BODY.PEEK[HEADER]"]) if uids else {}
        label = _label(name, flags)
        for uid, data in fetched.items():
            msgid = gmail_msgid(data[b"BODY[HEADER]"])
            index.ids[(name, int(uid))] = msgid
            if label is not None and label not in holders.setdefault(msgid, []):
                holders[msgid].append(label)
    for msgid, labels in holders.items():
        index.labels[msgid] = labels
    for _, msgid in index.ids.items():
        index.labels.setdefault(msgid, [])
    return index


def _label(name: bytes, flags: set[bytes]) -> bytes | None:
    """The label a folder shows (None for All Mail, which shows every message)."""
    if name.upper() == b"INBOX":
        return b"\\Inbox"
    if b"\\all" in flags:
        return None
    for flag, label in LABEL_OF_SPECIAL_USE.items():
        if flag in flags:
            return label
    return b'"' + name.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


class _Reader:
    """Lines (up to CRLF) and exact byte counts from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def _more(self) -> bool:
        try:
            data = self._sock.recv(65536)
        except OSError:
            return False
        self._buffer += data
        return bool(data)

    def line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._more():
                return b""
        line, _, self._buffer = self._buffer.partition(b"\r\n")
        return line + b"\r\n"

    def exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if not self._more():
                raise OSError("connection closed inside a literal")
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

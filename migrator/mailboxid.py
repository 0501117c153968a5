"""Canonical names of servers and mailboxes: what locks, checkpoints and connection caps
key on, so the same mailbox is one mailbox however a CSV spells it.

`MAIL.example`, `mail.example.` and `mail.example` are one host; `localhost`, `127.0.0.1`
and `::1` are one (the loopback); an IDN and its punycode form are one; a port is always
explicit.  Checkpoints key on (scheme, host, port, login) of both ends.  Locks are about
the *target* mailbox (duplicates happen where mail is written): one lock per name of its
host, the canonical name and each address it resolves to, taken all or none, so two
batches that spell one server as a name and as its address still exclude each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import socket
import urllib.parse

from migrator.model import MailboxJob, ServerAddress, TlsMode

LOOPBACK = "localhost"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def canonical_host(host: str) -> str:
    """Lower case, no trailing dot, IDNA (punycode) form, IP addresses in their short
    form, every loopback name or address as "localhost"."""
    text = host.strip().strip("[]").rstrip(".").lower()
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return LOOPBACK if address.is_loopback else address.compressed
    if text in _LOOPBACK_NAMES or text.endswith(".localhost"):
        return LOOPBACK
    with contextlib.suppress(UnicodeError):
        text = text.encode("idna").decode("ascii")
    return text


def server_id(server: ServerAddress) -> str:
    """scheme://host:port with the canonical host and the port always written; a local
    source (port 0: Maildir, mbox) is file:// and its real path, resolved when enqueued."""
    if server.port == 0:
        return f"file://{server.host}"
    scheme = server.protocol + ("s" if server.tls is TlsMode.IMPLICIT else "")
    host = canonical_host(server.host)
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{server.port}"


def canonical_url(url: str) -> str:
    """An https:// endpoint (EWS) with the canonical host and an explicit port."""
    parts = urllib.parse.urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or {"https": 443, "http": 80}.get(scheme, 0)
    host = canonical_host(parts.hostname or "")
    netloc = f"{f'[{host}]' if ':' in host else host}:{port}"
    return urllib.parse.urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def source_mailbox(job: MailboxJob) -> str:
    """The source mailbox: its server and the user the login opens (the authorization
    identity of a SASL PLAIN proxy login, else the login), and the root folder read."""
    credentials = job.source_credentials
    user = (credentials.authzid or credentials.login).strip().lower()
    root = (job.source_root_folder or "").strip("/")
    return f"{server_id(job.source_server)}/{user}" + (f"#{root}" if root else "")


def target_mailbox(server: ServerAddress, identity: str) -> str:
    return f"{server_id(server)}/{identity.strip().lower()}"


def mailbox_key(job: MailboxJob, target_server: ServerAddress) -> str:
    """Stable id of a (source mailbox, target mailbox) pair: what checkpoints key on."""
    text = source_mailbox(job) + "|" + target_mailbox(target_server, job.target_identity)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def lock_names(server: ServerAddress, identity: str, *, resolve: bool = True) -> tuple[str, ...]:
    """The names a lock on the target mailbox `identity` of `server` is taken under: the
    canonical host, and (with `resolve`) each address the host resolves to, whatever the
    port or scheme (over-locking only makes two runs wait, never copy twice)."""
    hosts = {canonical_host(server.host)}
    if resolve and hosts != {LOOPBACK}:
        hosts |= _addresses(server.host, server.port)
    user = identity.strip().lower()
    return tuple(f"{host}/{user}" for host in sorted(hosts))


def _addresses(host: str, port: int) -> set[str]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return set()  # unresolvable here: the name alone (the connection will fail anyway)
    return {canonical_host(str(info[4][0])) for info in found}

"""SASL for bearer tokens, pure: bytes in, bytes out.

OAUTHBEARER is RFC 7628; XOAUTH2 is Google's and Microsoft's older form of the same
(https://developers.google.com/gmail/imap/xoauth2-protocol).  A server that refuses a
token answers with a challenge holding a JSON error (RFC 7628 section 3.2.2) before its
tagged NO; the client must answer it (OAUTHBEARER: with a single %x01) to see the NO.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

OAUTHBEARER = "OAUTHBEARER"
XOAUTH2 = "XOAUTH2"
# RFC 7628 section 3.2.3: the client's answer to an error challenge.
OAUTHBEARER_DUMMY = b"\x01"

# What Exchange Online says when the token is good but the app may not open the
# mailbox (no IMAP.AccessAsApp / POP.AccessAsApp, no service principal, no mailbox
# permission).
EXCHANGE_NOT_CONNECTED = "User is authenticated but not connected"


def choose_mechanism(mechanisms: Iterable[str]) -> str | None:
    """OAUTHBEARER where the server offers it, else XOAUTH2; None: neither."""
    offered = {m.upper() for m in mechanisms}
    for mechanism in (OAUTHBEARER, XOAUTH2):
        if mechanism in offered:
            return mechanism
    return None


def _saslname(user: str) -> str:
    # RFC 5801 section 4: "," and "=" in the authzid are escaped.
    return user.replace("=", "=3D").replace(",", "=2C")


def initial_response(
    mechanism: str, user: str, token: str, host: str | None = None, port: int | None = None
) -> bytes:
    """The client's first message for `mechanism`, acting as `user`."""
    if mechanism == XOAUTH2:
        return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()
    if mechanism != OAUTHBEARER:
        raise ValueError(f"not a bearer token mechanism: {mechanism}")
    # RFC 7628 section 3.1: gs2 header, then key=value pairs separated by %x01.
    fields = []
    if host:
        fields.append(f"host={host}")
    if port:
        fields.append(f"port={port}")
    fields.append(f"auth=Bearer {token}")
    return (f"n,a={_saslname(user)}," + "\x01" + "\x01".join(fields) + "\x01\x01").encode()


def error_answer(mechanism: str) -> bytes:
    """What the client sends back to an error challenge: %x01 (OAUTHBEARER), nothing
    (XOAUTH2)."""
    return OAUTHBEARER_DUMMY if mechanism == OAUTHBEARER else b""


def error_status(challenge: bytes) -> str | None:
    """The "status" of a server's JSON error challenge ("invalid_token", "401", ...), or
    None if the challenge is not one."""
    try:
        data = json.loads(challenge.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if isinstance(data, dict) and "status" in data:
        return str(data["status"])
    return None


class BearerExchange:
    """A SASL exchange as imaplib and the other clients drive it: called with each server
    challenge, it returns the answer.  The first call sends the token; a later one is an
    error challenge, kept in `status` and answered so the server ends with its NO."""

    def __init__(self, mechanism: str, initial: bytes) -> None:
        self.mechanism = mechanism
        self._initial: bytes | None = initial
        self.status: str | None = None

    def __call__(self, challenge: bytes) -> bytes:
        if self._initial is not None:
            initial, self._initial = self._initial, None
            return initial
        self.status = error_status(challenge) or "unknown"
        return error_answer(self.mechanism)


def refusal_advice(kind: str, protocol: str, user: str, server_text: str) -> str:
    """What to grant or check when a server refused a fresh token for `user`: the words
    an operator can act on, for the provider `kind` (ProviderKind value)."""
    proto = {"imap": "IMAP", "pop3": "POP", "sieve": "IMAP"}.get(protocol, protocol.upper())
    if kind == "microsoft" or EXCHANGE_NOT_CONNECTED.lower() in server_text.lower():
        return (
            f"the app's token is not enough to open {user}: give the app the Office 365 "
            f"Exchange Online application permission {proto}.AccessAsApp with admin consent, "
            "register its service principal in Exchange Online (New-ServicePrincipal), and "
            f"give that service principal the mailbox (Add-MailboxPermission -User <id> "
            f"-AccessRights FullAccess -Identity {user})"
        )
    if kind == "google":
        return (
            "check the service account's domain-wide delegation in the Google Admin console "
            "(its client id, with the scope https://mail.google.com/), and that "
            f"{proto} is on for {user}"
        )
    return f"the token it was given is not valid for {user} (expired, or another user's)"

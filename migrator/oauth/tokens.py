"""Tokens kept until shortly before they expire, renewed then, and renewed at once when a
server refuses one.

A `TokenProvider` asks its token service for a token every time it is called; `Tokens`
decides when to call it.  One `Tokens` per provider configuration lives as long as the
worker process (`tokens_for`), so every connection of every mailbox the process copies
shares its tokens: an app-only token (Entra ID client credentials) serves every mailbox,
a delegated one (a Google service account acting as the user) serves its user.

Worker processes share them too, through a `TokenShelf` (Redis, migrator.state.tokens)
that `share_tokens` installs: a token goes there sealed with the batch key, bound to the
provider and user it serves, and only until it expires; a process that finds a fresh one
there asks its token service for none.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from migrator.errors import MigrationError
from migrator.model import ConnectOptions
from migrator.oauth.config import OAuthConfig
from migrator.secrets import Secret, SecretBox

# Renew a token this long before it expires: a quarter of its life, at most five minutes
# (Entra ID and Google tokens live an hour or more), so a login never carries one that
# expires on the way.
MAX_RENEW_AHEAD = 300.0
RENEW_FRACTION = 0.25


@dataclass(frozen=True)
class AccessToken:
    value: Secret
    expires_at: float | None  # epoch seconds; None: unknown (read again at each use)
    issued_at: float = 0.0

    def fresh(self, now: float) -> bool:
        """Whether it may still be sent, with room to spare."""
        if self.expires_at is None:
            return False
        life = max(self.expires_at - self.issued_at, 0.0)
        ahead = min(MAX_RENEW_AHEAD, life * RENEW_FRACTION)
        return now < self.expires_at - ahead


class TokenProvider(Protocol):
    """One token service (or file, or command)."""

    def fetch(self, user: str) -> AccessToken:
        """A new token to act as `user`; TokenRefused if the service says no,
        TokenServiceUnavailable if it cannot be reached."""
        ...

    def cache_key(self, user: str) -> str:
        """Which tokens serve `user`: "" for an app-only token (one for every user)."""
        ...


@dataclass(frozen=True)
class ShelvedToken:
    """A token as the shelf keeps it: sealed, with its times."""

    sealed: str
    issued_at: float
    expires_at: float


class TokenShelf(Protocol):
    """Where worker processes leave tokens for each other (sealed)."""

    def take(self, key: str) -> ShelvedToken | None: ...

    def leave(self, key: str, token: ShelvedToken) -> None: ...


_shared: tuple[TokenShelf, SecretBox] | None = None


def share_tokens(shelf: TokenShelf | None, box: SecretBox | None = None) -> None:
    """Tokens this process gets go on `shelf` sealed with `box`, and tokens other
    processes left there are used before asking a token service (None: stop sharing)."""
    global _shared
    _shared = (shelf, box) if shelf is not None and box is not None else None


class Tokens:
    """Tokens from one provider, shared by every connection in this process
    (migrator.model.TokenSource), and by every process through the shelf."""

    def __init__(
        self,
        provider: TokenProvider,
        describe: str,
        *,
        kind: str = "",
        clock: Callable[[], float] = time.time,
        shelf_key: str = "",
    ) -> None:
        self._provider = provider
        self._shelf_key = shelf_key  # "" : never shared (a test's own Tokens)
        self.describe = describe  # for error messages: which provider
        self.kind = kind  # the ProviderKind's value: which advice fits a refusal
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, AccessToken] = {}
        self.fetched = 0  # tokens asked of the provider: renewals show here

    def token(self, user: str) -> Secret:
        """A token for `user`: the one kept, unless it is near its end."""
        key = self._provider.cache_key(user)
        with self._lock:
            kept = self._cache.get(key)
            if kept is not None and kept.fresh(self._clock()):
                return kept.value
            return self._fetch(key, user)

    def renew(self, user: str, refused: Secret) -> Secret:
        """A token other than `refused`, which a server just refused: a new one, unless
        another connection has renewed it meanwhile."""
        key = self._provider.cache_key(user)
        with self._lock:
            kept = self._cache.get(key)
            if kept is not None and kept.value != refused and kept.fresh(self._clock()):
                return kept.value
            return self._fetch(key, user, refused)

    def _fetch(self, key: str, user: str, refused: Secret | None = None) -> Secret:
        shelved = self._from_shelf(key, refused)
        if shelved is not None:
            self._cache[key] = shelved
            return shelved.value
        token = self._provider.fetch(user)
        self.fetched += 1
        if token.expires_at is not None:
            self._cache[key] = token
            self._to_shelf(key, token)
        else:
            self._cache.pop(key, None)
        return token.value

    def _where(self, key: str) -> tuple[TokenShelf, SecretBox, str, dict[str, str]] | None:
        if _shared is None or not self._shelf_key:
            return None
        shelf, box = _shared
        name = hashlib.sha256(f"{self._shelf_key}\0{key}".encode()).hexdigest()
        return shelf, box, name, {"use": "oauth-token", "for": name}

    def _from_shelf(self, key: str, refused: Secret | None) -> AccessToken | None:
        """A fresh token another process left for `key`, other than `refused`; None when
        there is none, or it does not open (another key, or tampered with)."""
        where = self._where(key)
        if where is None:
            return None
        shelf, box, name, bound = where
        found = shelf.take(name)
        if found is None:
            return None
        try:
            value = box.open(found.sealed, bound, what="a shared token")
        except MigrationError:
            return None
        token = AccessToken(value, found.expires_at, found.issued_at)
        if value == refused or not token.fresh(self._clock()):
            return None
        return token

    def _to_shelf(self, key: str, token: AccessToken) -> None:
        where = self._where(key)
        if where is None or token.expires_at is None:
            return
        shelf, box, name, bound = where
        sealed = box.seal(token.value, bound)
        shelf.leave(name, ShelvedToken(sealed, token.issued_at, token.expires_at))


_registry: dict[str, Tokens] = {}
_registry_lock = threading.Lock()


def tokens_for(config: OAuthConfig, connect: ConnectOptions) -> Tokens:
    """The process's `Tokens` for `config` (made at the first call)."""
    from migrator.oauth.providers import make_provider

    key = config.cache_key() + repr((connect.ca_file, connect.insecure, connect.timeout))
    with _registry_lock:
        found = _registry.get(key)
        if found is None:
            provider = make_provider(config, connect)
            found = _registry[key] = Tokens(
                provider, config.describe(), kind=config.provider.value, shelf_key=key
            )
        return found

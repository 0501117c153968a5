"""Tokens kept until shortly before they expire, renewed then, and renewed at once when a
server refuses one.

A `TokenProvider` asks its token service for a token every time it is called; `Tokens`
decides when to call it.  One `Tokens` per provider configuration lives as long as the
worker process (`tokens_for`), so every connection of every mailbox the process copies
shares its tokens: an app-only token (Entra ID client credentials) serves every mailbox,
a delegated one (a Google service account acting as the user) serves its user.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from migrator.model import ConnectOptions
from migrator.oauth.config import OAuthConfig
from migrator.secrets import Secret

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


class Tokens:
    """Tokens from one provider, shared by every connection in this process
    (migrator.model.TokenSource)."""

    def __init__(
        self,
        provider: TokenProvider,
        describe: str,
        *,
        kind: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
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
            return self._fetch(key, user)

    def _fetch(self, key: str, user: str) -> Secret:
        token = self._provider.fetch(user)
        self.fetched += 1
        if token.expires_at is not None:
            self._cache[key] = token
        else:
            self._cache.pop(key, None)
        return token.value


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
            found = _registry[key] = Tokens(provider, config.describe(), kind=config.provider.value)
        return found

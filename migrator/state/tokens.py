"""RedisTokenShelf: where worker processes leave OAuth tokens for each other.

A token is kept sealed (migrator.oauth.tokens seals it with the batch key, bound to the
provider and user it serves) under a name that is a digest, and only until it expires:
Redis holds no token in plain text, and none past its life.
"""

from __future__ import annotations

import contextlib
import json
import time

import redis

from migrator.oauth.tokens import ShelvedToken
from migrator.state.keys import token_key


class RedisTokenShelf:
    """migrator.oauth.tokens.TokenShelf in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def take(self, key: str) -> ShelvedToken | None:
        try:
            raw = self._r.get(token_key(key))
        except redis.RedisError:
            return None  # the token service is asked instead
        if raw is None:
            return None
        try:
            data = json.loads(str(raw))
            return ShelvedToken(str(data["sealed"]), float(data["issued"]), float(data["expires"]))
        except (ValueError, KeyError, TypeError):
            return None  # not ours to read: asked of the token service instead

    def leave(self, key: str, token: ShelvedToken) -> None:
        life_ms = int((token.expires_at - time.time()) * 1000)
        if life_ms <= 0:
            return
        value = {"sealed": token.sealed, "issued": token.issued_at, "expires": token.expires_at}
        with contextlib.suppress(redis.RedisError):  # not shared: each worker asks its own
            self._r.set(token_key(key), json.dumps(value), px=life_ms)

"""Passwords in memory and at rest.

A `Secret` never shows its value in `repr`, `str`, f-strings or tracebacks; code
that needs the value calls `reveal()` at the last moment (the LOGIN command).
At rest (job payloads, Redis) a secret is only ever a Fernet token made with the
key in MIGRATOR_SECRET_KEY.
"""

from __future__ import annotations

import os

from cryptography.fernet import Fernet, InvalidToken

from migrator.errors import ConfigError

SECRET_KEY_ENV = "MIGRATOR_SECRET_KEY"


class Secret:
    """A password that does not print itself."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __reduce__(self) -> str | tuple[object, ...]:
        # Refuse to be pickled in the clear (Celery, multiprocessing): seal() it instead.
        raise TypeError("a Secret is not pickled; seal it with SecretBox first")


def new_key() -> str:
    """A fresh Fernet key, as text for MIGRATOR_SECRET_KEY."""
    return Fernet.generate_key().decode("ascii")


class SecretBox:
    """Seals and opens secrets with one Fernet key."""

    def __init__(self, key: str) -> None:
        try:
            self._fernet = Fernet(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ConfigError(
                f"{SECRET_KEY_ENV} is not a valid Fernet key (32 url-safe base64 bytes)"
            ) from exc

    @classmethod
    def from_env(cls) -> SecretBox:
        key = os.environ.get(SECRET_KEY_ENV, "")
        if not key:
            raise ConfigError(
                f"{SECRET_KEY_ENV} is not set: workers and enqueuers must share one key "
                "(make one with `migrator keygen`)"
            )
        return cls(key)

    def seal(self, secret: Secret) -> str:
        return self._fernet.encrypt(secret.reveal().encode("utf-8")).decode("ascii")

    def open(self, token: str) -> Secret:
        try:
            return Secret(self._fernet.decrypt(token.encode("ascii")).decode("utf-8"))
        except (InvalidToken, UnicodeError) as exc:
            raise ConfigError(
                f"a sealed password cannot be opened: {SECRET_KEY_ENV} differs from the "
                "key the batch was enqueued with"
            ) from exc

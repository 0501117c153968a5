"""Passwords in memory and at rest.

A `Secret` never shows its value in `repr`, `str`, f-strings or tracebacks; code
that needs the value calls `reveal()` at the last moment (the LOGIN command).
At rest (job payloads, Redis) a secret is only ever a Fernet token made with the
key in MIGRATOR_SECRET_KEY.

The safety net for text no one meant to hold a secret (a library's exception, a log
line): every live `Secret` is known to `redact()`, which blanks its value in any form
it may take in text, and `RedactingFilter` applies it to every log record a handler
writes.  Error text is redacted again where Redis stores it (migrator.state).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import logging
import os
import threading
import weakref

from cryptography.fernet import Fernet, InvalidToken

from migrator.errors import ConfigError

SECRET_KEY_ENV = "MIGRATOR_SECRET_KEY"


class Secret:
    """A password that does not print itself, and that `redact()` blanks while it lives."""

    __slots__ = ("__weakref__", "_forms", "_value")

    def __init__(self, value: str) -> None:
        self._value = value
        self._forms: tuple[str, ...] | None = None  # made at the first redact()
        if value:
            with _live_lock:
                _live[next(_live_keys)] = self

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


# Every Secret alive in this process, weakly: a Secret that is dropped stops being redacted
# (and its value is no longer in memory to leak).  Keyed by a counter, not by value: two
# Secrets with one value must both count.
_live: weakref.WeakValueDictionary[int, Secret] = weakref.WeakValueDictionary()
_live_keys = itertools.count()
_live_lock = threading.Lock()

REDACTED = "********"
# Shorter values cannot be told from ordinary words; blanking them would garble the text
# without protecting anything (a password that short is guessed, not read in a log).
MIN_REDACTED_LENGTH = 4
_MIN_BASE64_FORM = 8


def _forms(value: str) -> tuple[str, ...]:
    """The ways `value` can show in text: as it is, escaped (JSON, Python str and bytes
    reprs, UTF-8 read as Latin-1), and base64-encoded inside a longer run (an HTTP Basic
    or SASL PLAIN credential) at each of the three alignments, less the characters it
    shares with its neighbours.  Longest first, so a longer form is blanked whole."""
    if len(value) < MIN_REDACTED_LENGTH:
        return ()
    utf8 = value.encode("utf-8")
    encodings = [utf8]
    with contextlib.suppress(UnicodeEncodeError):  # else never sent as Latin-1
        encodings.append(value.encode("latin-1"))
    forms = {
        value,
        json.dumps(value)[1:-1],
        ascii(value)[1:-1],
        repr(utf8)[2:-1],
        utf8.decode("latin-1"),
    }
    for raw in encodings:
        for skip in range(3):
            data = b"\0" * skip + raw
            encoded = base64.b64encode(data).decode("ascii")
            end = len(encoded) - 4 if len(data) % 3 else len(encoded)
            form = encoded[4 if skip else 0 : end]
            if len(form) >= _MIN_BASE64_FORM:
                forms.add(form)
    return tuple(sorted(forms, key=len, reverse=True))


def redact(text: str) -> str:
    """`text` with the value of every live Secret blanked, in every form `_forms` knows."""
    if not text:
        return text
    with _live_lock:
        secrets = list(_live.values())
    for secret in secrets:
        if secret._forms is None:
            secret._forms = _forms(secret._value)
        for form in secret._forms:
            if form in text:
                text = text.replace(form, REDACTED)
    return text


def exception_text(exc: BaseException) -> str:
    """`Type: message` of an exception no adapter translated, safe to store and show."""
    if isinstance(exc, UnicodeError):
        # Its message quotes the character it could not encode: a piece of whatever was
        # being encoded, a password perhaps.  Its repr holds the whole of it.
        encoding = getattr(exc, "encoding", "?")
        return f"{type(exc).__name__}: {encoding!r} codec: {getattr(exc, 'reason', '')}"
    return f"{type(exc).__name__}: {redact(str(exc))}"


class RedactingFilter(logging.Filter):
    """Blanks live secrets in a record's message, exception and stack text.  Installed on
    handlers (a logger's filters do not see records its children propagate to it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler's own format() reports it
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            # What Formatter.format would write; it keeps exc_text once set.
            record.exc_text = _FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FORMATTER = logging.Formatter()


def install_redaction(logger: logging.Logger) -> None:
    """A RedactingFilter on each handler of `logger` that has none yet."""
    for handler in logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


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

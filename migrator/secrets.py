"""Passwords in memory and at rest.

A `Secret` never shows its value in `repr`, `str`, f-strings or tracebacks; code
that needs the value calls `reveal()` at the last moment (the LOGIN command).
At rest (job payloads, Redis) a secret is only ever a token sealed with AES-256-GCM
under a key derived from MIGRATOR_SECRET_KEY, bound to what it is for (server, login,
TLS options: the associated data), so a payload changed in Redis does not open.

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
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from migrator.errors import ConfigError, PayloadTampered

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
    forms: set[str] = set()
    for secret in secrets:
        if secret._forms is None:
            secret._forms = _forms(secret._value)
        forms.update(secret._forms)
    # Longest first: a live secret that is part of another must not break the longer one
    # up before it is blanked whole.
    for form in sorted(forms, key=len, reverse=True):
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
    """A fresh key, as text for MIGRATOR_SECRET_KEY: a Fernet key (32 url-safe base64
    bytes), the form earlier versions made, from which the sealing key is derived."""
    return Fernet.generate_key().decode("ascii")


# A sealed secret: "v2:" KEY-ID ":" base64url(nonce | AES-256-GCM ciphertext and tag).  The
# key id (derived from the key, as the sealing key is) tells a worker with another key
# from a changed payload: both would fail the tag alike.
TOKEN_VERSION = "v2"
_NONCE_BYTES = 12  # 96 bits, chosen at random for each seal (NIST SP 800-38D)
_SEALING_INFO = b"migrator: AES-256-GCM key for sealed secrets, v2"
_KEY_ID_INFO = b"migrator: key id of sealed secrets, v2"
# Fernet tokens (version byte 0x80) start so in url-safe base64.
_FERNET_PREFIX = "gAAAAA"


def associated_data(bound_to: Mapping[str, object]) -> bytes:
    """The canonical encoding of what a secret is for: sorted, compact, ASCII JSON, so that
    two descriptions are the same bytes exactly when they are the same values (True and 1,
    443 and "443", None and "" all differ)."""
    return json.dumps(
        {"sealed": TOKEN_VERSION, **bound_to},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    ).encode("ascii")


class SecretBox:
    """Seals and opens secrets with the key in MIGRATOR_SECRET_KEY, each bound to what it
    is for (AES-256-GCM's associated data): a secret opens only for the use it was sealed
    for.  Which fields describe a use is the caller's choice (migrator.payload)."""

    def __init__(self, key: str) -> None:
        try:
            Fernet(key.encode("ascii"))  # the format `migrator keygen` prints
            material = base64.urlsafe_b64decode(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise ConfigError(
                f"{SECRET_KEY_ENV} is not a valid Fernet key (32 url-safe base64 bytes)"
            ) from exc
        self._key = Secret(key)  # blanked by redact() while this box lives
        self._aead = AESGCM(_derive(material, _SEALING_INFO, 32))
        self._key_id = base64.urlsafe_b64encode(_derive(material, _KEY_ID_INFO, 6)).decode()

    @classmethod
    def from_env(cls) -> SecretBox:
        key = os.environ.get(SECRET_KEY_ENV, "")
        if not key:
            raise ConfigError(
                f"{SECRET_KEY_ENV} is not set: workers and enqueuers must share one key "
                "(make one with `migrator keygen`)"
            )
        return cls(key)

    def seal(self, secret: Secret, bound_to: Mapping[str, object]) -> str:
        """A token that opens to `secret` only with this key and the same `bound_to`."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(
            nonce, secret.reveal().encode("utf-8"), associated_data(bound_to)
        )
        body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii")
        return f"{TOKEN_VERSION}:{self._key_id}:{body}"

    def open(self, token: str, bound_to: Mapping[str, object], *, what: str) -> Secret:
        """The secret sealed in `token` for `bound_to`.  `what` names it for the errors:
        ConfigError for a token of another key or of an earlier version, PayloadTampered
        for one sealed for another use (or not a token at all)."""
        version, _, rest = token.partition(":")
        key_id, _, body = rest.partition(":")
        if version != TOKEN_VERSION:
            if token.startswith(_FERNET_PREFIX):
                raise ConfigError(
                    f"{what}: sealed by an earlier migrator (Fernet, not bound to its server "
                    "and login): enqueue the batch again"
                )
            raise PayloadTampered(f"{what}: {TAMPERED}")
        if key_id != self._key_id:
            raise ConfigError(
                f"{what}: sealed with another key: {SECRET_KEY_ENV} differs from the key "
                "the batch was enqueued with"
            )
        try:
            data = base64.urlsafe_b64decode(body.encode("ascii"))
            plain = self._aead.decrypt(
                data[:_NONCE_BYTES], data[_NONCE_BYTES:], associated_data(bound_to)
            )
            return Secret(plain.decode("utf-8"))
        except (InvalidTag, ValueError):  # ValueError: not base64, too short, not UTF-8
            raise PayloadTampered(f"{what}: {TAMPERED}") from None


TAMPERED = (
    "the job payload was changed after it was enqueued (a password sealed in it does not "
    "open for the server, login or TLS options it names now); nothing was sent: "
    "enqueue the batch again"
)


def _derive(material: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(material)

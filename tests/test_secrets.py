"""Secrets in memory and at rest: what `redact` blanks and the log filter that applies it, and
sealing (AES-GCM bound to what a secret is for)."""

from __future__ import annotations

import base64
import gc
import io
import json
import logging

import pytest
from redis import Redis

from migrator.report import MailboxResult, MailboxState
from migrator.secrets import (
    REDACTED,
    RedactingFilter,
    Secret,
    exception_text,
    install_redaction,
    redact,
)
from migrator.state import NewJob, StateStore

PASSWORD = "Pässwörd-ü-€-日本-r3dact"


# -- redact ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "form",
    [
        PASSWORD,
        json.dumps(PASSWORD)[1:-1],  # "P\u00e4ssw\u00f6rd..."
        ascii(PASSWORD)[1:-1],  # "P\xe4ssw\xf6rd..."
        repr(PASSWORD.encode())[2:-1],  # "P\xc3\xa4ssw..."
        PASSWORD.encode().decode("latin-1"),  # UTF-8 read as Latin-1
    ],
    ids=["as-is", "json", "str-repr", "bytes-repr", "mojibake"],
)
def test_redact_blanks_a_live_secret_in_every_textual_form(form: str) -> None:
    secret = Secret(PASSWORD)
    text = f"UnicodeEncodeError('ascii', 'a001 LOGIN \"user\" \"{form}\"', 22, 23)"

    assert (
        redact(text) == f"UnicodeEncodeError('ascii', 'a001 LOGIN \"user\" \"{REDACTED}\"', 22, 23)"
    )
    del secret


@pytest.mark.parametrize("prefix", [b"", b"u", b"us", b"user\0", b"user@example.test\0"])
def test_redact_blanks_a_live_secret_base64_encoded_at_any_alignment(prefix: bytes) -> None:
    secret = Secret(PASSWORD)
    # SASL PLAIN (authzid NUL authcid NUL password) and HTTP Basic (user:password), in UTF-8.
    for raw in (prefix + b"\0" + PASSWORD.encode(), prefix + b":" + PASSWORD.encode()):
        encoded = base64.b64encode(raw).decode()
        clean = redact(f"AUTHENTICATE PLAIN {encoded} trailing")
        assert REDACTED in clean
        # What is left of the run is at most the characters its neighbours share.
        left = clean.split("PLAIN ", 1)[1].split(" trailing")[0].replace(REDACTED, "")
        assert len(left) <= len(base64.b64encode(prefix + b"\0")) + 4
    del secret


def test_redact_blanks_a_latin1_secret_base64_encoded_as_latin1() -> None:
    secret = Secret("Pässwörd-latin1")
    header = base64.b64encode(b"user:" + "Pässwörd-latin1".encode("latin-1")).decode()

    assert REDACTED in redact(f"Authorization: Basic {header}")
    del secret


def test_a_secret_is_redacted_while_it_lives_and_forgotten_when_dropped() -> None:
    value = "Dropped-Secret-9f3e"
    text = f"error: {value}"
    secret = Secret(value)
    twin = Secret(value)  # the same value twice: both count

    assert redact(text) == f"error: {REDACTED}"
    del secret
    gc.collect()
    assert redact(text) == f"error: {REDACTED}"  # the twin still lives
    del twin
    gc.collect()
    assert redact(text) == text


def test_redact_leaves_text_without_secrets_and_very_short_secrets_alone() -> None:
    short, empty = Secret("pw1"), Secret("")
    text = "pw1 and pw2: login refused: [AUTHENTICATIONFAILED] Authentication failed."

    assert redact(text) == text
    assert redact("") == ""
    del short, empty


def test_exception_text_gives_the_type_and_a_redacted_message() -> None:
    secret = Secret(PASSWORD)

    assert (
        exception_text(ValueError(f"bad value {PASSWORD}")) == f"ValueError: bad value {REDACTED}"
    )
    try:
        f'a001 LOGIN "user" "{PASSWORD}"'.encode("ascii")
    except UnicodeEncodeError as exc:
        text = exception_text(exc)
    # Not even the one character the codec could not encode.
    assert text == "UnicodeEncodeError: 'ascii' codec: ordinal not in range(128)"
    del secret


# -- the log filter -------------------------------------------------------------------------


def _logger_writing_to(stream: io.StringIO, name: str) -> logging.Logger:
    logger = logging.getLogger(name)
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.handlers = [handler]
    return logger


def test_the_log_filter_blanks_secrets_in_messages_arguments_and_tracebacks() -> None:
    secret = Secret(PASSWORD)
    stream = io.StringIO()
    logger = _logger_writing_to(stream, "migrator.test.redaction")
    install_redaction(logger)
    install_redaction(logger)  # once is enough: no second filter

    logger.warning("login with %s failed", PASSWORD)
    logger.warning(f"as text: {PASSWORD}")
    try:
        raise RuntimeError(f"command LOGIN user {PASSWORD!r}")
    except RuntimeError:
        logger.exception("mailbox failed unexpectedly")
    logger.info("stack", stack_info=True, extra={"unrelated": 1})

    written = stream.getvalue()
    assert PASSWORD not in written
    assert ascii(PASSWORD)[1:-1] not in written
    assert written.count(REDACTED) == 3
    assert "RuntimeError: command LOGIN user" in written  # the traceback is still there
    assert [type(f) for f in logger.handlers[0].filters] == [RedactingFilter]
    del secret


def test_celery_logging_setup_installs_the_filter_on_its_handlers() -> None:
    from celery.signals import after_setup_logger, after_setup_task_logger

    import workers.app  # noqa: F401  connects the signal handlers

    for signal, name in ((after_setup_logger, "root-like"), (after_setup_task_logger, "task")):
        logger = _logger_writing_to(io.StringIO(), f"migrator.test.celery.{name}")
        signal.send(sender=None, logger=logger, loglevel=logging.INFO, logfile=None,
                    format="%(message)s", colorize=False)  # fmt: skip
        assert any(isinstance(f, RedactingFilter) for f in logger.handlers[0].filters)


# -- where Redis stores error text ------------------------------------------------------------


def test_an_error_text_holding_a_live_secret_is_stored_redacted(redis_url: str) -> None:
    secret = Secret(PASSWORD)
    store = StateStore.from_url(redis_url)
    store.create_batch("b", {}, [NewJob("00001", 2, "a@x", "a@x", "key-1", "{}")])
    error = f"internal error: UnicodeEncodeError('ascii', 'LOGIN \"a@x\" \"{PASSWORD}\"', 5, 6)"

    store.set_state("b", "00001", MailboxState.FAILED, error=error)
    after_set_state = store.mailbox("b", "00001")
    store.record_result("b", "00001", MailboxResult(state=MailboxState.FAILED, error=error))
    after_result = store.mailbox("b", "00001")

    assert after_set_state is not None and after_result is not None
    for status in (after_set_state, after_result):
        assert status.last_error.startswith("internal error: UnicodeEncodeError")
        assert PASSWORD not in status.last_error and REDACTED in status.last_error
    client = Redis.from_url(redis_url)
    try:
        hashes = [k for k in client.scan_iter() if client.type(k) == b"hash"]
        stored = b"".join(v for k in hashes for v in client.hvals(k))
    finally:
        client.close()
    assert PASSWORD.encode() not in stored
    del secret

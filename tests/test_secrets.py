"""Secrets in memory and at rest: what `redact` blanks and the log filter that applies it, and
sealing (AES-GCM bound to what a secret is for)."""

from __future__ import annotations

import base64
import gc
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from redis import Redis

from migrator import jobs
from migrator.batch import AccessMethod, parse_server
from migrator.connectors.ews.settings import EwsAuth, EwsSettings, endpoint_address
from migrator.errors import ConfigError, PayloadTampered
from migrator.forwardjobs import ForwardOptions, build_forward_jobs
from migrator.model import AdminLogin, ConnectOptions, Credentials, MailboxJob
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.report import MailboxResult, MailboxState
from migrator.secrets import (
    REDACTED,
    TOKEN_VERSION,
    RedactingFilter,
    Secret,
    SecretBox,
    associated_data,
    exception_text,
    install_redaction,
    new_key,
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


# -- sealing ----------------------------------------------------------------------------------

BOUND = {"for": "source password", "server": {"host": "mail.example", "port": 993}}


def test_a_sealed_secret_opens_with_the_same_key_and_the_same_use() -> None:
    box = SecretBox(new_key())
    token = box.seal(Secret(PASSWORD), BOUND)

    assert box.open(token, dict(BOUND), what="source mailbox a@x").reveal() == PASSWORD
    assert token.startswith(f"{TOKEN_VERSION}:")
    assert token != box.seal(Secret(PASSWORD), BOUND)  # a fresh nonce each time
    assert PASSWORD not in token and not leaks_base64(token, PASSWORD)


def leaks_base64(token: str, secret: str) -> bool:
    body = token.rsplit(":", 1)[1]
    return secret.encode() in base64.urlsafe_b64decode(body)


@pytest.mark.parametrize(
    "other",
    [
        {"for": "target password", "server": {"host": "mail.example", "port": 993}},
        {"for": "source password", "server": {"host": "evil.example", "port": 993}},
        {"for": "source password", "server": {"host": "mail.example", "port": "993"}},
        {"for": "source password", "server": {"host": "mail.example", "port": 993}, "x": None},
        {"for": "source password"},
    ],
    ids=["role", "host", "port-as-text", "one-more-field", "one-field-less"],
)
def test_a_sealed_secret_does_not_open_for_another_use(other: dict[str, object]) -> None:
    box = SecretBox(new_key())
    token = box.seal(Secret(PASSWORD), BOUND)

    with pytest.raises(PayloadTampered, match="source mailbox a@x: the job payload was changed"):
        box.open(token, other, what="source mailbox a@x")


def test_a_token_changed_by_a_byte_or_not_a_token_at_all_is_tampered() -> None:
    box = SecretBox(new_key())
    token = box.seal(Secret(PASSWORD), BOUND)
    prefix, body = token.rsplit(":", 1)
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[20] ^= 1

    for bad in (
        f"{prefix}:{base64.urlsafe_b64encode(bytes(raw)).decode()}",
        f"{prefix}:{body[:10]}",
        f"{prefix}:not base64!",
        "v9:abc:def",
        PASSWORD,
    ):
        with pytest.raises(PayloadTampered) as tampered:
            box.open(bad, BOUND, what="target mailbox b@x")
        assert tampered.value.code == "TAMPERED"
        assert PASSWORD not in str(tampered.value)


def test_a_token_of_another_key_says_so() -> None:
    token = SecretBox(new_key()).seal(Secret(PASSWORD), BOUND)

    with pytest.raises(ConfigError, match="MIGRATOR_SECRET_KEY differs from the key"):
        SecretBox(new_key()).open(token, BOUND, what="source mailbox a@x")


def test_a_fernet_token_of_an_earlier_version_is_refused_with_what_to_do() -> None:
    key = new_key()
    old = Fernet(key.encode()).encrypt(PASSWORD.encode()).decode()

    with pytest.raises(ConfigError, match=r"source mailbox a@x: sealed by an earlier .*enqueue"):
        SecretBox(key).open(old, BOUND, what="source mailbox a@x")


def test_the_key_keeps_its_format_and_is_redacted_while_its_box_lives() -> None:
    with pytest.raises(ConfigError, match="not a valid Fernet key"):
        SecretBox("not-a-key")
    key = new_key()  # what `migrator keygen` prints: a Fernet key, as before
    Fernet(key.encode())
    box = SecretBox(key)

    assert redact(f"MIGRATOR_SECRET_KEY={key}") == f"MIGRATOR_SECRET_KEY={REDACTED}"
    del box


def test_associated_data_is_canonical() -> None:
    assert associated_data({"b": 1, "a": {"y": None, "x": True}}) == associated_data(
        {"a": {"x": True, "y": None}, "b": 1}
    )
    assert associated_data({"a": 1}) != associated_data({"a": True})
    assert associated_data({"a": "ü"}) == b'{"a":"\\u00fc","sealed":"v2"}'


# -- what a payload's secrets are bound to ------------------------------------------------------

SOURCE_PASSWORD = "Sörce-Pässwörd-€-1"
ADMIN_PASSWORD = "Ädmin-Pässwörd-€-2"
CLIENT_SECRET = "client-Secret-€-3"


def _payload(box: SecretBox, *, ews: bool = False) -> dict[str, Any]:
    """A migration payload as build_jobs makes it: IMAP source (proxyauth), IMAP or EWS
    target, with TLS options and a ManageSieve port."""
    job = MailboxJob(
        line=2,
        source_identity="jdoe@old.example",
        source_server=parse_server("imaps://mail.old.example:993"),
        source_credentials=Credentials("admin", Secret(SOURCE_PASSWORD), "jdoe@old.example"),
        source_root_folder="Users/jdoe",
        target_identity="john@new.example",
    )
    settings = (
        EwsSettings(
            endpoint="https://ews.new.example/EWS/Exchange.asmx",
            auth=EwsAuth.OAUTH,
            tenant_id="tenant-1",
            client_id="client-1",
            client_secret=Secret(CLIENT_SECRET),
        )
        if ews
        else None
    )
    options = RunOptions(
        target=TargetSpec(
            server=endpoint_address(settings.endpoint)
            if settings
            else parse_server("imaps://mail.new.example:993"),
            method=AccessMethod.PROXYAUTH,
            admin=AdminLogin("svc-admin", Secret(ADMIN_PASSWORD)),
            kind="ews" if ews else "imap",
            settings=settings,
        ),
        connect=ConnectOptions(timeout=30, ca_file="/etc/ssl/private-ca.pem"),
        sieve_port=4190,
    )
    (new,) = build_jobs([job], options, box)
    return dict(json.loads(new.payload))


def _job(payload: dict[str, Any]) -> jobs.Job:
    return jobs.Job.from_json(json.dumps(payload))


def _open_all(payload: dict[str, Any], box: SecretBox) -> tuple[str, str, str | None]:
    source = jobs.open_source(_job(payload), box)
    target = jobs.open_target(_job(payload), box)
    settings = target.settings
    secret = settings.secret.reveal() if settings and settings.secret else None
    return (
        source.job.source_credentials.password.reveal(),
        target.credentials.password.reveal(),
        secret,
    )


def test_a_payload_opens_as_it_was_built_and_holds_no_secret_in_clear() -> None:
    box = SecretBox(new_key())
    payload = _payload(box, ews=True)

    assert _open_all(payload, box) == (SOURCE_PASSWORD, ADMIN_PASSWORD, CLIENT_SECRET)
    text = json.dumps(payload)
    for secret in (SOURCE_PASSWORD, ADMIN_PASSWORD, CLIENT_SECRET):
        assert secret not in text and json.dumps(secret)[1:-1] not in text


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(payload: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = payload
        for name in parents:
            node = node[name]
        node[last] = value

    return change


# Every field a secret is bound to, changed as an attacker with write access to Redis would:
# (which secret no longer opens, the change).
BOUND_FIELDS = {
    "source.kind": ("source", _set("source.kind", "pop")),
    "source.identity": ("source", _set("source.identity", "ceo@old.example")),
    "source.root_folder": ("source", _set("source.root_folder", "Users/ceo")),
    "source.server.host": ("source", _set("source.server.host", "evil.example")),
    "source.server.port": ("source", _set("source.server.port", 143)),
    "source.server.tls": ("source", _set("source.server.tls", "starttls")),
    "source.server.protocol": ("source", _set("source.server.protocol", "pop3")),
    "source.credentials.login": ("source", _set("source.credentials.login", "root")),
    "source.credentials.authzid": ("source", _set("source.credentials.authzid", "ceo@x")),
    "options.sieve_port": ("source", _set("options.sieve_port", 2000)),
    "options.allow_plaintext": ("both", _set("options.allow_plaintext", True)),
    "options.insecure": ("both", _set("options.insecure", True)),
    "options.ca_file": ("both", _set("options.ca_file", "/tmp/attacker-ca.pem")),
    "target.kind": ("target", _set("target.kind", "imap")),
    "target.identity": ("target", _set("target.identity", "ceo@new.example")),
    "target.server.host": ("target", _set("target.server.host", "evil.example")),
    "target.server.port": ("target", _set("target.server.port", 8443)),
    "target.credentials.login": ("target", _set("target.credentials.login", "root")),
    "target.credentials.authzid": ("target", _set("target.credentials.authzid", "ceo@x")),
    "target.settings.endpoint": (
        "target",
        _set("target.settings.endpoint", "https://evil.example/EWS"),
    ),
    "target.settings.auth": ("target", _set("target.settings.auth", "basic")),
    "target.settings.client_id": ("target", _set("target.settings.client_id", "client-2")),
    "target.settings.tenant_id": ("target", _set("target.settings.tenant_id", "tenant-2")),
    "target.settings (dropped)": ("target", _set("target.settings", None)),
    "swapped passwords": (
        "both",
        lambda p: _swap(p["source"]["credentials"], p["target"]["credentials"], "password"),
    ),
}


def _swap(a: dict[str, Any], b: dict[str, Any], key: str) -> None:
    a[key], b[key] = b[key], a[key]


@pytest.mark.parametrize("field", list(BOUND_FIELDS))
def test_each_field_a_secret_is_bound_to_when_changed_fails_as_tampered(field: str) -> None:
    box = SecretBox(new_key())
    payload = _payload(box, ews=True)
    side, change = BOUND_FIELDS[field]
    change(payload)

    with pytest.raises(PayloadTampered) as tampered:
        _open_all(payload, box)
    assert "the job payload was changed after it was enqueued" in str(tampered.value)
    assert f"{side} mailbox " in str(tampered.value) or side == "both"
    if side != "source":  # the target's secrets alone do not open either
        with pytest.raises(PayloadTampered):
            jobs.open_target(_job(payload), box)
    if side != "target":
        with pytest.raises(PayloadTampered):
            jobs.open_source(_job(payload), box)


@pytest.mark.parametrize(
    "change",
    [
        _set("options.timeout", 5.0),
        _set("options.since", "2020-01-01T00:00:00"),
        _set("options.max_connections_per_server", 2),
        _set("target.activation_quota", 1000),
        _set("target.settings.max_connections", 1),
    ],
    ids=["timeout", "since", "max-connections", "quota", "ews-max-connections"],
)
def test_fields_that_send_no_secret_anywhere_else_may_change(
    change: Callable[[dict[str, Any]], None],
) -> None:
    box = SecretBox(new_key())
    payload = _payload(box, ews=True)
    change(payload)

    assert _open_all(payload, box) == (SOURCE_PASSWORD, ADMIN_PASSWORD, CLIENT_SECRET)


def test_a_forwarding_payload_binds_its_source_password_the_same_way() -> None:
    box = SecretBox(new_key())
    job = MailboxJob(
        line=2,
        source_identity="jdoe@old.example",
        source_server=parse_server("imaps://mail.old.example:993"),
        source_credentials=Credentials("jdoe@old.example", Secret(SOURCE_PASSWORD)),
        source_root_folder=None,
        target_identity="john@new.example",
    )
    (forwarding,) = build_forward_jobs([job], ForwardOptions(sieve_port=4190), box)
    payload = json.loads(forwarding.to_json())

    source = jobs.open_source(_job(payload), box)
    assert source.job.source_credentials.password.reveal() == SOURCE_PASSWORD
    payload["options"]["sieve_port"] = 2000
    with pytest.raises(PayloadTampered, match=r"source mailbox jdoe@old\.example: the job"):
        jobs.open_source(_job(payload), box)

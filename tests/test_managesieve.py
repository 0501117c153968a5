"""migrator.connectors.imap.managesieve against the test Dovecot's Pigeonhole
ManageSieve, plus a few scripted loopback servers for what Dovecot cannot be made to do
(no STARTTLS, silence, garbage)."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)

from migrator.connectors.imap.managesieve import SieveClient, SieveScript
from migrator.connectors.tls import tls_context
from migrator.errors import LoginFailed, PermanentError, TransientError
from migrator.model import ConnectOptions
from migrator.secrets import Secret

WRONG_PASSWORD = "Wrong-Sieve-Pw-4471"

# LF-only and CRLF lines, a tab, and text beyond ASCII: it must come back byte for byte.
VACATION = (
    'require ["vacation", "fileinto"];\n'
    'if header :contains "subject" "Überweisung" { fileinto "Bank"; }\r\n'
    '\tvacation :days 7 "Je suis absent, de retour le 3 août. 休暇中です。";\n'
)
KEEP = "keep;\r\n"
BROKEN = 'require "fileinto";\nfoobar;\n'


def user_session(dovecot: DovecotServer, context: ssl.SSLContext, user: str) -> SieveClient:
    """A session logged in as `user` with the password make_user gives."""
    client = SieveClient.connect(dovecot.host, dovecot.sieve_port, context=context, timeout=10)
    client.authenticate(user, Secret(DEFAULT_USER_PASSWORD))
    return client


def test_connect_upgrades_to_tls_and_reads_the_capabilities_sent_under_tls(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    user = make_user()
    with SieveClient.connect(
        dovecot.host, dovecot.sieve_port, context=ssl_context, timeout=10
    ) as client:
        # Dovecot offers STARTTLS only before TLS: its absence shows the list was read again.
        assert "STARTTLS" not in client.capabilities
        assert client.capabilities["SASL"].split() == ["PLAIN", "LOGIN"]
        assert client.capabilities["VERSION"] == "1.0"
        assert {"fileinto", "vacation", "imap4flags"} <= client.sieve_extensions()
        client.authenticate(user, Secret(DEFAULT_USER_PASSWORD))
        # A fresh account has no scripts, so none is active.
        assert client.list_scripts() == []


def test_master_user_authenticates_as_the_admin_and_acts_as_the_user(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    user = make_user()
    with SieveClient.connect(
        dovecot.host, dovecot.sieve_port, context=ssl_context, timeout=10
    ) as admin:
        admin.authenticate(MASTER_USER, Secret(MASTER_PASSWORD), authzid=user)
        admin.put_script("from-admin", KEEP)
        admin.set_active("from-admin")

    with user_session(dovecot, ssl_context, user) as client:
        assert client.list_scripts() == [SieveScript("from-admin", active=True)]


@pytest.mark.parametrize("authzid", [None, "user"], ids=["user", "master-user"])
def test_a_wrong_password_is_login_failed_and_never_shows_the_password(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext, authzid: str | None
) -> None:
    user = make_user()
    login = MASTER_USER if authzid else user
    who = f"{login} as {user}" if authzid else login
    with (
        SieveClient.connect(
            dovecot.host, dovecot.sieve_port, context=ssl_context, timeout=10, what=user
        ) as client,
        pytest.raises(LoginFailed) as refused,
    ):
        client.authenticate(login, Secret(WRONG_PASSWORD), authzid=user if authzid else None)

    assert str(refused.value) == (
        f"{user} (sieve://{dovecot.host}:{dovecot.sieve_port}): "
        f"login {who} refused: Authentication failed."
    )
    chain: BaseException | None = refused.value
    while chain is not None:
        assert WRONG_PASSWORD not in str(chain)
        assert WRONG_PASSWORD not in repr(chain)
        chain = chain.__cause__ or chain.__context__


def test_scripts_round_trip_put_list_get_activate_deactivate_delete(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    # A name with a quote goes out as a literal, the others as quoted strings.
    odd_name = 'Abwesenheit "August" é'
    with user_session(dovecot, ssl_context, make_user()) as client:
        client.put_script(odd_name, VACATION)
        client.put_script("keep", KEEP)
        assert sorted(client.list_scripts(), key=lambda s: s.name) == [
            SieveScript(odd_name, active=False),
            SieveScript("keep", active=False),
        ]

        client.set_active(odd_name)
        assert SieveScript(odd_name, active=True) in client.list_scripts()
        assert client.get_script(odd_name) == VACATION
        assert client.get_script("keep") == KEEP

        client.set_active("")
        assert not any(script.active for script in client.list_scripts())
        client.delete_script(odd_name)
        client.delete_script("keep")
        assert client.list_scripts() == []


def test_a_big_script_round_trips(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    script = "".join(f'if header :is "x-n" "{n} ü" {{ keep; }}\n' for n in range(3000))
    with user_session(dovecot, ssl_context, make_user()) as client:
        client.put_script("big", script)
        assert client.get_script("big") == script


def test_refusals_name_the_script_and_give_the_servers_reason(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    with user_session(dovecot, ssl_context, make_user()) as client:
        client.put_script("main", KEEP)
        client.set_active("main")

        with pytest.raises(PermanentError) as active:
            client.delete_script("main")
        assert str(active.value).endswith(
            'DELETESCRIPT "main" refused (ACTIVE): Cannot delete the active Sieve script.'
        )

        with pytest.raises(PermanentError) as missing:
            client.get_script("nope")
        assert 'GETSCRIPT "nope" refused (NONEXISTENT)' in str(missing.value)

        # The session goes on after a refusal.
        assert client.list_scripts() == [SieveScript("main", active=True)]


def test_check_script_accepts_valid_sieve_and_explains_what_is_wrong_with_the_rest(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> None:
    with user_session(dovecot, ssl_context, make_user()) as client:
        client.check_script(VACATION)
        with pytest.raises(PermanentError) as broken:
            client.check_script(BROKEN)
        assert "CHECKSCRIPT refused" in str(broken.value)
        assert "line 2: error: unknown command 'foobar'" in str(broken.value)

        with pytest.raises(PermanentError) as refused:
            client.put_script("broken", BROKEN)
        assert 'PUTSCRIPT "broken" refused' in str(refused.value)
        assert "unknown command 'foobar'" in str(refused.value)
        assert client.list_scripts() == []


def test_the_certificate_is_checked_against_the_system_cas_by_default(
    dovecot: DovecotServer,
) -> None:
    with pytest.raises(PermanentError) as untrusted:
        SieveClient.connect(
            dovecot.host, dovecot.sieve_port, context=ssl.create_default_context(), timeout=10
        )
    message = str(untrusted.value)
    assert "TLS certificate not trusted: unable to get local issuer certificate" in message
    assert message.endswith("give --ca-file, or --insecure to skip the check")


def test_insecure_skips_the_certificate_check(dovecot: DovecotServer, make_user: MakeUser) -> None:
    insecure = tls_context(ConnectOptions(insecure=True))
    with user_session(dovecot, insecure, make_user()) as client:
        assert client.list_scripts() == []


# -- scripted servers ---------------------------------------------------------------------------


@contextlib.contextmanager
def scripted_server(
    greeting: bytes, *, tls: ssl.SSLContext | None = None, hang_up: bool = False
) -> Iterator[tuple[int, bytearray]]:
    """A loopback server for one connection: it sends `greeting` and then hangs up, or answers
    LOGOUT with OK; it keeps what the client sent in the bytearray it yields with its port."""
    received = bytearray()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)

    def serve() -> None:
        with contextlib.suppress(OSError), listener.accept()[0] as conn:
            conn.settimeout(10)
            with tls.wrap_socket(conn, server_side=True) if tls else conn as sock:
                sock.sendall(greeting)
                while not hang_up and (chunk := sock.recv(4096)):
                    received.extend(chunk)
                    if received.endswith(b"LOGOUT\r\n"):
                        sock.sendall(b'OK "bye"\r\n')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], received
    finally:
        thread.join(15)
        listener.close()


NO_STARTTLS = b'"IMPLEMENTATION" "plain only"\r\n"SASL" "PLAIN"\r\nOK "ready"\r\n'


def test_a_server_without_starttls_is_refused_unless_plaintext_is_allowed(
    ssl_context: ssl.SSLContext,
) -> None:
    with scripted_server(NO_STARTTLS) as (port, _), pytest.raises(PermanentError) as refused:
        SieveClient.connect("127.0.0.1", port, context=ssl_context, timeout=5, what="bob")
    assert str(refused.value) == (
        f"bob (sieve://127.0.0.1:{port}): server offers no STARTTLS; "
        "use implicit TLS or allow plaintext explicitly"
    )

    with (
        scripted_server(NO_STARTTLS) as (port, received),
        SieveClient.connect(
            "127.0.0.1", port, context=ssl_context, timeout=5, allow_plaintext=True
        ) as client,
    ):
        assert client.capabilities == {"IMPLEMENTATION": "plain only", "SASL": "PLAIN"}
    assert received == b"LOGOUT\r\n"  # and never STARTTLS


def test_implicit_tls_speaks_tls_from_the_first_byte(
    tls_files: TlsFiles, ssl_context: ssl.SSLContext
) -> None:
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    with (
        scripted_server(NO_STARTTLS, tls=server_context) as (port, received),
        SieveClient.connect(
            "localhost", port, context=ssl_context, timeout=5, implicit_tls=True
        ) as client,
    ):
        assert client.capabilities["IMPLEMENTATION"] == "plain only"
    assert received == b"LOGOUT\r\n"


@pytest.mark.parametrize(
    ("greeting", "error", "text"),
    [
        (b'BYE "Too many connections"\r\n', TransientError, "greeting: server closed the session"),
        (b'NO (TRYLATER) "Maintenance"\r\n', TransientError, "server busy (TRYLATER): Maintenance"),
        (b'"IMPLEMENTATION" "x"\r\n', TransientError, "connection lost: the server closed"),
        (b"* OK IMAP4rev1 ready\r\n", PermanentError, "not a ManageSieve response"),
    ],
    ids=["bye", "trylater", "hung-up", "imap-port"],
)
def test_a_greeting_that_is_not_ok_is_transient_or_permanent(
    ssl_context: ssl.SSLContext, greeting: bytes, error: type[Exception], text: str
) -> None:
    with (
        scripted_server(greeting, hang_up=True) as (port, _),
        pytest.raises(error) as failed,
    ):
        SieveClient.connect("127.0.0.1", port, context=ssl_context, timeout=5)
    assert type(failed.value) is error
    assert text in str(failed.value)


def test_a_silent_server_times_out_as_a_transient_error(ssl_context: ssl.SSLContext) -> None:
    with scripted_server(b"") as (port, _), pytest.raises(TransientError) as silent:
        SieveClient.connect("127.0.0.1", port, context=ssl_context, timeout=0.3)
    assert str(silent.value).endswith("connection lost: timed out")


def test_after_a_timeout_the_session_is_dropped_without_waiting_to_log_out(
    ssl_context: ssl.SSLContext,
) -> None:
    with (
        scripted_server(NO_STARTTLS) as (port, received),  # it never answers LISTSCRIPTS
        pytest.raises(TransientError) as silent,
        SieveClient.connect(
            "127.0.0.1", port, context=ssl_context, timeout=0.3, allow_plaintext=True
        ) as client,
    ):
        client.list_scripts()
    assert str(silent.value).endswith("connection lost: timed out")
    assert received == b"LISTSCRIPTS\r\n"

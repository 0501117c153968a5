"""Each access method logs in to a real Dovecot and reads the right mailbox.

Every job here comes from a batch CSV through `parse_batch`, exactly as a batch would, and is
read with `ImapSource`. The user's mailbox is filled first with folders and message counts
no other mailbox has, so a listing that matches proves the login reached that user's mailbox
and not the admin's or anyone else's.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import Fill, PopulatedMessage
from support import batch_job, imaps

from migrator.batch import AccessMethod
from migrator.connectors.imap.source import ImapSource
from migrator.connectors.tls import tls_context
from migrator.errors import FolderRefused, LoginFailed, PermanentError
from migrator.model import AdminLogin, ConnectOptions, MailboxJob
from migrator.secrets import Secret

# Folder -> message count: "Projects" itself is only a parent (\Noselect) and is not listed.
FOLDERS = {"INBOX": 3, "Reports": 2, "Projects/2024": 4}
# RFC 6154 folders Dovecot gives every account at its first login; they stay empty here.
EMPTY_SPECIAL_USE = {"Drafts": 0, "Junk": 0, "Sent": 0, "Trash": 0}
EXPECTED_VIEW = {**EMPTY_SPECIAL_USE, **FOLDERS}

ADMIN = AdminLogin(MASTER_USER, Secret(MASTER_PASSWORD))
WRONG_PASSWORD = "Wrong-Pw-7731-zz"


def _row(server: str, login: str, password: str = "", root: str = "") -> dict[str, str]:
    return {
        "SourceIdentity": "jdoe@example.test",
        "SourceServer": server,
        "SourceLoginID": login,
        "SourcePassword": password,
        "TargetIdentity": "jdoe@target.example.test",
        "SourceRootFolder": root,
    }


def _options(tls_files: TlsFiles, **kw: object) -> ConnectOptions:
    return ConnectOptions(timeout=30, ca_file=str(tls_files.ca_cert), **kw)  # type: ignore[arg-type]


@contextlib.contextmanager
def _source(job: MailboxJob, options: ConnectOptions) -> Iterator[ImapSource]:
    source = ImapSource(job, options)
    try:
        yield source
    finally:
        source.close()


def _view(source: ImapSource) -> dict[str, int]:
    """Folder name -> number of messages, for every folder the source lists."""
    return {f.name: len(source.list_messages(f)) for f in source.list_folders()}


def _sizes(source: ImapSource) -> dict[str, list[int]]:
    return {f.name: sorted(m.size for m in source.list_messages(f)) for f in source.list_folders()}


def _populated_sizes(messages: list[PopulatedMessage]) -> dict[str, list[int]]:
    sizes: dict[str, list[int]] = {name: [] for name in EMPTY_SPECIAL_USE}
    for m in messages:
        sizes.setdefault(m.folder, []).append(m.size)
    return {name: sorted(values) for name, values in sizes.items()}


def _assert_reads_the_users_mailbox(
    job: MailboxJob, tls_files: TlsFiles, sent: list[PopulatedMessage]
) -> None:
    """The job's login reached the user's own mailbox: the folders it was filled with
    (`sent`), each with the sizes of its messages."""
    with _source(job, _options(tls_files)) as source:
        assert _view(source) == EXPECTED_VIEW
        assert _sizes(source) == _populated_sizes(sent)


# -- the five access methods ------------------------------------------------------------------


def test_individual_logs_in_with_the_login_and_password_of_the_row(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user()
    sent = fill(user, FOLDERS)
    job = batch_job(_row(imaps(dovecot), user, DEFAULT_USER_PASSWORD), AccessMethod.INDIVIDUAL)

    _assert_reads_the_users_mailbox(job, tls_files, sent)


def test_manual_sends_a_master_user_login_from_the_row_as_written(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user()
    sent = fill(user, FOLDERS)
    login = f"{user}*{MASTER_USER}"
    assert login == dovecot.master_login(user)
    job = batch_job(_row(imaps(dovecot), login, MASTER_PASSWORD), AccessMethod.MANUAL)
    assert job.source_credentials.login == login

    _assert_reads_the_users_mailbox(job, tls_files, sent)


def test_combined_builds_the_master_login_from_the_template_and_the_admin_given_to_the_tool(
    dovecot_slash: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user(server=dovecot_slash)
    sent = fill(user, FOLDERS, server=dovecot_slash)
    job = batch_job(
        _row(imaps(dovecot_slash), user),
        AccessMethod.COMBINED,
        admin=ADMIN,
        combined_template="{user}/{admin}",
    )
    assert job.source_credentials.login == f"{user}/{MASTER_USER}"

    _assert_reads_the_users_mailbox(job, tls_files, sent)


def test_proxyauth_authenticates_as_the_admin_and_acts_as_the_user(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user()
    sent = fill(user, FOLDERS)
    job = batch_job(_row(imaps(dovecot), user), AccessMethod.PROXYAUTH, admin=ADMIN)
    assert (job.source_credentials.login, job.source_credentials.authzid) == (MASTER_USER, user)

    _assert_reads_the_users_mailbox(job, tls_files, sent)


# The admin account's own mailbox holds every user's mail under Users/<name>.
ARCHIVE_PASSWORD = "archive-secret-Pw3"
ARCHIVE_FOLDERS = {
    "Users/jdoe/INBOX": 3,
    "Users/jdoe/Sent": 2,
    "Users/jdoe/Projects/2024": 1,
    "Users/jdoe2/INBOX": 5,  # shares the prefix "Users/jdoe" as text, not as a folder
    "Users/other/INBOX": 4,
    "Personal": 6,
}


@pytest.fixture
def archive_account(make_user: MakeUser, fill: Fill) -> str:
    account = make_user(ARCHIVE_PASSWORD, prefix="archive-admin")
    fill(account, ARCHIVE_FOLDERS, ARCHIVE_PASSWORD)
    return account


def test_rootfolder_lists_only_the_folders_under_the_root_relative_to_it(
    dovecot: DovecotServer, archive_account: str, tls_files: TlsFiles
) -> None:
    job = batch_job(
        _row(imaps(dovecot), archive_account, root="Users/jdoe"),
        AccessMethod.ROOTFOLDER,
        admin=AdminLogin(archive_account, Secret(ARCHIVE_PASSWORD)),
    )
    assert job.source_credentials.login == archive_account

    with _source(job, _options(tls_files)) as source:
        folders = source.list_folders()
        assert sorted(f.path for f in folders) == [("INBOX",), ("Projects", "2024"), ("Sent",)]
        assert {f.name: len(source.list_messages(f)) for f in folders} == {
            "Users/jdoe/INBOX": 3,
            "Users/jdoe/Sent": 2,
            "Users/jdoe/Projects/2024": 1,
        }


def test_rootfolder_with_a_root_that_does_not_exist_is_refused(
    dovecot: DovecotServer, archive_account: str, tls_files: TlsFiles
) -> None:
    job = batch_job(
        _row(imaps(dovecot), archive_account, root="Users/nobody"),
        AccessMethod.ROOTFOLDER,
        admin=AdminLogin(archive_account, Secret(ARCHIVE_PASSWORD)),
    )

    with _source(job, _options(tls_files)) as source, pytest.raises(FolderRefused) as refused:
        source.list_folders()
    assert "Users/nobody" in str(refused.value)
    assert "jdoe@example.test" in str(refused.value)


# -- TLS --------------------------------------------------------------------------------------


def _server(dovecot: DovecotServer, scheme: str) -> str:
    port = dovecot.imap_port if scheme == "imap" else dovecot.imaps_port
    return f"{scheme}://127.0.0.1:{port}"


@pytest.mark.parametrize("scheme", ["imap", "imaps"], ids=["starttls", "implicit-tls"])
def test_tls_verifies_the_server_against_the_given_ca(
    scheme: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user()
    fill(user, {"INBOX": 2})
    job = batch_job(
        _row(_server(dovecot, scheme), user, DEFAULT_USER_PASSWORD), AccessMethod.INDIVIDUAL
    )

    with _source(job, _options(tls_files)) as source:
        assert _view(source) == {**EMPTY_SPECIAL_USE, "INBOX": 2}


@pytest.mark.parametrize("scheme", ["imap", "imaps"], ids=["starttls", "implicit-tls"])
def test_a_server_certificate_from_an_unknown_ca_is_refused_and_names_the_mailbox(
    scheme: str, dovecot: DovecotServer, make_user: MakeUser
) -> None:
    user = make_user()
    job = batch_job(
        _row(_server(dovecot, scheme), user, DEFAULT_USER_PASSWORD), AccessMethod.INDIVIDUAL
    )

    # System CAs only: the test CA is not among them.
    with pytest.raises(PermanentError) as refused:
        ImapSource(job, ConnectOptions(timeout=30))
    message = str(refused.value)
    assert "source mailbox jdoe@example.test" in message
    assert "certificate not trusted" in message
    assert DEFAULT_USER_PASSWORD not in message


@pytest.mark.parametrize("scheme", ["imap", "imaps"], ids=["starttls", "implicit-tls"])
def test_insecure_connects_without_verifying_the_certificate(
    scheme: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
) -> None:
    user = make_user()
    fill(user, {"INBOX": 1})
    job = batch_job(
        _row(_server(dovecot, scheme), user, DEFAULT_USER_PASSWORD), AccessMethod.INDIVIDUAL
    )

    with _source(job, ConnectOptions(timeout=30, insecure=True)) as source:
        assert _view(source) == {**EMPTY_SPECIAL_USE, "INBOX": 1}


def test_connections_opened_at_once_on_a_cold_process_share_one_tls_context(
    tls_files: TlsFiles, tmp_path: Path
) -> None:
    """A mailbox opens its source, its target and their lanes side by side: on a process
    that has made no context yet, they wait for one maker rather than each loading the
    CA store (10 to 20 ms of CPU each with the system's)."""
    # A CA file of its own (a copy): no context for it is cached by an earlier test.
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(tls_files.ca_cert.read_bytes())
    options = ConnectOptions(timeout=30, ca_file=str(ca_file))
    start = threading.Barrier(8)
    made: list[ssl.SSLContext] = []

    def open_one() -> None:
        start.wait()
        made.append(tls_context(options))

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(made) == 8 and all(context is made[0] for context in made)


# -- refused logins ---------------------------------------------------------------------------


def test_a_wrong_password_is_login_failed_naming_the_login_but_not_the_password(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles
) -> None:
    user = make_user()
    job = batch_job(_row(imaps(dovecot), user, WRONG_PASSWORD), AccessMethod.INDIVIDUAL)

    with pytest.raises(LoginFailed) as refused:
        ImapSource(job, _options(tls_files))
    message = str(refused.value)
    assert f"login {user} refused" in message
    assert "source mailbox jdoe@example.test" in message
    assert WRONG_PASSWORD not in message
    assert WRONG_PASSWORD not in repr(refused.value.args)


def test_a_wrong_admin_password_for_proxyauth_names_admin_and_user_but_not_the_password(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles
) -> None:
    user = make_user()
    job = batch_job(
        _row(imaps(dovecot), user),
        AccessMethod.PROXYAUTH,
        admin=AdminLogin(MASTER_USER, Secret(WRONG_PASSWORD)),
    )

    with pytest.raises(LoginFailed) as refused:
        ImapSource(job, _options(tls_files))
    message = str(refused.value)
    assert f"login {MASTER_USER} as {user} refused" in message
    assert WRONG_PASSWORD not in message


# -- passwords that are not ASCII -------------------------------------------------------------

UMLAUT_PASSWORD = "Pässwörd-ü-€-日本"


class _LoginOnlyServer:
    """The test Dovecot's plaintext IMAP port as a server that offers neither STARTTLS nor
    AUTH=PLAIN (only LOGIN), or whatever else `cut` names: each is cut from every line it
    sends. With no `cut`, what follows the greeting passes as it is (TLS after STARTTLS
    included), and the greeting changes: `bare_greeting`, without the capabilities in it,
    as some servers greet; `greeting_cut`, words cut from it. What the client sends is
    kept in `sent`."""

    def __init__(
        self,
        port: int,
        cut: tuple[bytes, ...] = (b" STARTTLS", b" AUTH=PLAIN"),
        *,
        bare_greeting: bool = False,
        greeting_cut: tuple[bytes, ...] = (),
    ) -> None:
        self._port, self._cut, self._bare_greeting = port, cut, bare_greeting
        self._greeting_cut = greeting_cut
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.sent = bytearray()
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                server = socket.create_connection(("127.0.0.1", self._port))
                self._sockets += [client, server]
                threading.Thread(target=self._up, args=(client, server), daemon=True).start()
                threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(65536):
                self.sent += data
                server.sendall(data)

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError), server.makefile("rb") as lines:
            if not self._cut:  # the greeting alone changed; then bytes as they come
                greeting = lines.readline()
                if self._bare_greeting:
                    greeting = re.sub(rb"\[CAPABILITY [^]]*\] ", b"", greeting)
                for word in self._greeting_cut:
                    greeting = greeting.replace(word, b"")
                client.sendall(greeting)
                while data := lines.read1(65536):
                    client.sendall(data)
                return
            for line in lines:
                for word in self._cut:
                    line = line.replace(word, b"")
                client.sendall(line)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()


@pytest.fixture
def login_only_server(dovecot: DovecotServer) -> Iterator[_LoginOnlyServer]:
    server = _LoginOnlyServer(dovecot.imap_port)
    yield server
    server.close()


@pytest.mark.parametrize("sasl_ir", [True, False], ids=["sasl-ir", "no-sasl-ir"])
def test_proxyauth_sends_its_first_response_in_the_command_where_the_server_takes_it(
    sasl_ir: bool,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    """RFC 4959 SASL-IR: AUTHENTICATE PLAIN and its response in one line, one round trip;
    a server without it gets the command alone, and the response once it asks."""
    user = make_user()
    fill(user, {"INBOX": 2})
    cut = (b" STARTTLS",) if sasl_ir else (b" STARTTLS", b" SASL-IR")
    server = _LoginOnlyServer(dovecot.imap_port, cut)
    try:
        job = batch_job(
            _row(f"imap://127.0.0.1:{server.port}", user), AccessMethod.PROXYAUTH, admin=ADMIN
        )
        with _source(job, _options(tls_files, allow_plaintext=True)) as source:
            assert _view(source) == {**EMPTY_SPECIAL_USE, "INBOX": 2}
    finally:
        server.close()
    response = base64.b64encode(f"{user}\0{MASTER_USER}\0{MASTER_PASSWORD}".encode())
    sent = bytes(server.sent)
    if sasl_ir:
        assert b" AUTHENTICATE PLAIN " + response + b"\r\n" in sent
    else:
        assert b" AUTHENTICATE PLAIN\r\n" + response + b"\r\n" in sent


@pytest.mark.parametrize(
    ("greeting", "asked"),
    [({}, 0), ({"bare_greeting": True}, 1), ({"greeting_cut": (b" STARTTLS",)}, 1)],
    ids=["capabilities", "bare", "starttls-unlisted"],
)
def test_a_session_asks_for_capabilities_only_where_the_greeting_did_not_give_them(
    greeting: dict[str, Any],
    asked: int,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    """RFC 3501 section 7.1: a greeting's CAPABILITY response code spares the command (one
    round trip a connection). A server that greets without one is asked; so is one whose
    greeting lists fewer than it has, before STARTTLS missing there is refused."""
    user = make_user()
    fill(user, {"INBOX": 2})
    server = _LoginOnlyServer(dovecot.imap_port, (), **greeting)
    try:
        url = f"imap://127.0.0.1:{server.port}"
        job = batch_job(_row(url, user, DEFAULT_USER_PASSWORD), AccessMethod.INDIVIDUAL)
        with _source(job, _options(tls_files)) as source:
            assert _view(source) == {**EMPTY_SPECIAL_USE, "INBOX": 2}
    finally:
        server.close()
    # What was sent before STARTTLS (after it, TLS, which asks again as RFC 2595 says).
    sent = bytes(server.sent)
    assert len(re.findall(rb"^\w+ CAPABILITY\r\n", sent, re.MULTILINE)) == asked
    assert re.search(rb"^\w+ STARTTLS\r\n", sent, re.MULTILINE)
    assert DEFAULT_USER_PASSWORD.encode() not in sent  # the login went over TLS


@pytest.mark.parametrize("scheme", ["imap", "imaps"], ids=["starttls", "implicit-tls"])
def test_a_non_ascii_password_authenticates_with_sasl_plain_in_utf8(
    scheme: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
) -> None:
    user = make_user(UMLAUT_PASSWORD)
    fill(user, {"INBOX": 2}, UMLAUT_PASSWORD)
    job = batch_job(_row(_server(dovecot, scheme), user, UMLAUT_PASSWORD), AccessMethod.INDIVIDUAL)

    with _source(job, _options(tls_files)) as source:
        assert _view(source) == {**EMPTY_SPECIAL_USE, "INBOX": 2}


def test_without_auth_plain_a_non_ascii_password_goes_as_a_login_literal_in_utf8(
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    login_only_server: _LoginOnlyServer,
) -> None:
    user = make_user(UMLAUT_PASSWORD)
    fill(user, {"INBOX": 3}, UMLAUT_PASSWORD)
    url = f"imap://127.0.0.1:{login_only_server.port}"
    job = batch_job(_row(url, user, UMLAUT_PASSWORD), AccessMethod.INDIVIDUAL)

    with _source(job, _options(tls_files, allow_plaintext=True)) as source:
        assert _view(source) == {**EMPTY_SPECIAL_USE, "INBOX": 3}
    sent = bytes(login_only_server.sent)
    password = UMLAUT_PASSWORD.encode()
    assert f'LOGIN "{user}" {{{len(password)}'.encode() in sent  # RFC 3501 literal: {N} or {N+}
    assert password in sent
    assert b"AUTHENTICATE" not in sent


def test_without_auth_plain_a_wrong_non_ascii_password_is_login_failed(
    make_user: MakeUser,
    tls_files: TlsFiles,
    login_only_server: _LoginOnlyServer,
) -> None:
    user = make_user(UMLAUT_PASSWORD)
    wrong = "Wröng-Pässwörd-€"
    job = batch_job(
        _row(f"imap://127.0.0.1:{login_only_server.port}", user, wrong), AccessMethod.INDIVIDUAL
    )

    with pytest.raises(LoginFailed) as refused:
        ImapSource(job, _options(tls_files, allow_plaintext=True))
    message = str(refused.value)
    assert f"login {user} refused" in message
    assert "AUTHENTICATIONFAILED" in message
    assert wrong not in message and wrong not in repr(refused.value.args)

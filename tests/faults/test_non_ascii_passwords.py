"""Passwords that are not ASCII (umlauts, a euro sign, CJK) log in everywhere migrator logs
in: IMAP (a user's own login, an admin's with an authorization identity or as a master
login), POP3 (USER/PASS, AUTH PLAIN), ManageSieve and Exchange (HTTP Basic). A wrong one
fails the mailbox with the server's words, and neither it nor its base64 reaches the status,
the log, Redis or its files.

Every password here is registered in BATCH_PASSWORDS: the fault suite's leak scan checks Redis
and the captured log after each test, and every file the tests wrote at the end."""

from __future__ import annotations

import json
import logging
import secrets
import ssl
from collections import Counter
from pathlib import Path

import pytest
from celerykit import cli
from ews_server import EwsServer
from faultkit import (
    ExactlyOnce,
    MailboxPairs,
    digest,
    leaks,
    run_in_process,
    run_options,
    stored,
)
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    NON_ASCII_MASTER_PASSWORD,
    NON_ASCII_MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import Fill
from support import (
    BATCH_PASSWORDS,
    CopyMailbox,
    batch_password,
    batch_text,
    from_exchange,
    imaps,
    pop3s,
    source_row,
    write_source_batch,
)

from migrator.batch import AccessMethod, parse_batch, parse_server
from migrator.connectors.imap import connection as imapconn
from migrator.connectors.imap.managesieve import SieveClient
from migrator.model import AdminLogin, Credentials
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.report import MailboxState
from migrator.runner import execute_job
from migrator.secrets import Secret, SecretBox, new_key
from migrator.state import StateStore

FOLDERS = {"INBOX": 12, "Archive": 6}


@pytest.mark.parametrize(
    ("protocol", "method"),
    [("imap", "individual"), ("pop3", "individual"), ("pop3", "proxyauth")],
)
def test_a_non_ascii_password_logs_in_and_the_mailbox_is_copied(
    protocol: str,
    method: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password(f"umlaut-{protocol}-{method}")
    source, target = make_user(password), make_user()
    folders = FOLDERS if protocol == "imap" else {"INBOX": 12}
    fill(source, folders, password, size_hint=3_000)
    kind = "pop" if protocol == "pop3" else "imap"

    if method == "individual":
        status = copy_mailbox(
            source, target, password=password, batch_id="umlaut", source_kind=kind
        )
    else:
        # POP3 AUTH PLAIN (RFC 5034): the admin, whose password is not ASCII either, acts
        # as the user.
        options, _ = run_options(
            dovecot.imaps_port, dovecot.imaps_port, tls_files.ca_cert, source_kind=kind
        )
        status = _run_rows(
            StateStore.from_url(redis_url), "umlaut", options, AccessMethod.PROXYAUTH,
            [(pop3s(dovecot), source, target)], protocol="pop3",
        )[0]  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == sum(folders.values())
    exactly_once.copied(source, password, target)


@pytest.mark.parametrize("method", ["proxyauth", "combined"])
def test_an_admin_with_a_non_ascii_password_logs_in_for_every_mailbox_on_both_sides(
    method: str,
    dovecot: DovecotServer,
    mailbox_pairs: MailboxPairs,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    # proxyauth: AUTHENTICATE PLAIN with the user as authorization identity; combined: the
    # master login "user*admin-intl" with the admin's password.
    access = AccessMethod(method)
    pairs = mailbox_pairs(f"admin-{method}", FOLDERS, 2, size_hint=3_000)
    options = RunOptions(
        target=TargetSpec(
            server=parse_server(imaps(dovecot)),
            method=access,
            admin=_admin(),
            combined_template="{user}*{admin}",
        ),
        connect=run_options(1, 1, tls_files.ca_cert)[0].connect,
    )
    store = StateStore.from_url(redis_url)

    statuses = _run_rows(
        store, f"admin-{method}", options, access,
        [(imaps(dovecot), source, target) for source, _pw, target in pairs],
    )  # fmt: skip

    assert [s.state for s in statuses] == [MailboxState.SYNCED] * 2, statuses
    for pair in pairs:
        exactly_once.copied(*pair)


def test_forwarding_logs_in_to_managesieve_with_a_non_ascii_password(
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    tmp_path: Path,
    local_state: Path,
) -> None:
    password = batch_password("sieve")
    source, target = make_user(password), make_user(prefix="new")
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), [(source, password, target)])

    code, out = cli(
        ["forwarding", "set", str(batch), "--json", "--method", "individual",
         "--sieve-port", str(dovecot.sieve_port), "--ca-file", str(tls_files.ca_cert)]
    )  # fmt: skip

    assert code == 0, out
    (row,) = json.loads(out)
    assert row["state"] == "set", row
    client = SieveClient.connect("127.0.0.1", dovecot.sieve_port, context=ssl_context, timeout=10)
    with client:
        client.authenticate(source, Secret(password))
        (active,) = [s for s in client.list_scripts() if s.active]
        assert f'redirect :copy "{target}"' in client.get_script(active.name)


def test_a_non_ascii_password_logs_in_to_exchange_with_basic_auth(
    ews: EwsServer,
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    # RFC 7617: Basic credentials in UTF-8 (requests alone would send Latin-1, and cannot
    # send the euro sign or CJK at all).
    password = batch_password("ews-basic")
    source = f"umlaut-{secrets.token_hex(4)}@example.com"
    ews.add_user(source, password)
    sent = [
        f"Subject: m{n}\r\nMessage-ID: <umlaut.{source}.{n}@x>\r\n\r\nbody {n}\r\n".encode()
        for n in range(5)
    ]
    for raw in sent:
        ews.store[source].deliver(raw)
    target = make_user()
    options = from_exchange(
        run_options(dovecot.imaps_port, dovecot.imaps_port, tls_files.ca_cert)[0]
    )

    status = run_in_process(
        StateStore.from_url(redis_url), "ews-umlaut", options, f"http://127.0.0.1:{ews.port}",
        source, password, target,
    )  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    exactly_once(
        {"INBOX": Counter(digest(raw) for raw in sent)},
        stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context),
    )


@pytest.mark.parametrize("whose", ["user", "admin"])
def test_a_wrong_non_ascii_password_fails_the_mailbox_and_is_shown_nowhere(
    whose: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    tls_files: TlsFiles,
    tmp_path: Path,
    local_state: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Every row fails on the same wrong password: the user's own, or the target admin's.
    wrong = batch_password(f"wrong-{whose}")
    rows = []
    for _ in range(2):
        source = make_user(batch_password("right"))
        password = wrong if whose == "user" else dovecot.users[source].password
        rows.append((source, password, make_user()))
    admin_password = wrong if whose == "admin" else NON_ASCII_MASTER_PASSWORD

    mailboxes, seen = _run_and_look_everywhere(
        dovecot, tls_files, tmp_path, local_state, capsys, caplog, rows, admin_password
    )

    side, state = ("source", "failed") if whose == "user" else ("target", "not_ready")
    for row in mailboxes:
        assert row["state"] == state, row
        assert f"{side} mailbox " in row["last_error"]
        assert "refused" in row["last_error"] and "internal error" not in row["last_error"]
        assert "AUTHENTICATIONFAILED" in row["last_error"], row
    assert wrong in BATCH_PASSWORDS
    assert not _leaked(seen)


def test_an_error_no_adapter_foresaw_shows_no_password_anywhere(
    dovecot: DovecotServer,
    make_user: MakeUser,
    tls_files: TlsFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    local_state: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The safety net: exceptions whose text holds the password (as imaplib's did, for a
    # LOGIN it could not encode) reach the copier's "internal error" branch. The repr goes
    # to the status and Redis, the traceback to the log: all without the password. Here the
    # login of each side (the target's first: the admin's password) breaks that way.
    password = batch_password("unforeseen")
    source = make_user(password)

    def login_that_breaks(client: object, credentials: Credentials, where: str) -> None:
        command = f'a001 LOGIN "{credentials.login}" "{credentials.password.reveal()}"'
        try:
            command.encode("ascii")  # UnicodeEncodeError, the command in its repr
        except UnicodeEncodeError as exc:
            raise RuntimeError(f"cannot send {command!r}") from exc  # and in its message

    monkeypatch.setattr(imapconn, "_login", login_that_breaks)

    mailboxes, seen = _run_and_look_everywhere(
        dovecot, tls_files, tmp_path, local_state, capsys, caplog,
        [(source, password, make_user())], NON_ASCII_MASTER_PASSWORD,
    )  # fmt: skip

    (row,) = mailboxes
    assert row["state"] in ("failed", "not_ready"), row
    assert "internal error: RuntimeError" in row["last_error"], row
    assert "RuntimeError: cannot send 'a001 LOGIN" in str(seen["the -v log"])  # a traceback
    assert not _leaked(seen)


# -- helpers ----------------------------------------------------------------------------------


def _admin() -> AdminLogin:
    return AdminLogin(NON_ASCII_MASTER_USER, Secret(NON_ASCII_MASTER_PASSWORD))


def _run_and_look_everywhere(
    dovecot: DovecotServer,
    tls_files: TlsFiles,
    tmp_path: Path,
    state: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    rows: list[tuple[str, str, str]],
    admin_password: str,
) -> tuple[list[dict[str, str]], dict[str, str | bytes]]:
    """`migrator -v run` of (source, password, target) rows to the test Dovecot, each target
    reached by the non-ASCII admin's master login, with this machine's private Redis; the
    status rows, and everything that shows them: the status table and JSON, what the run
    printed, the -v log, and every file of the private Redis (snapshot, append-only file)."""
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), rows)
    admin_file = tmp_path / "admin.pw"
    admin_file.write_text(admin_password, encoding="utf-8")
    caplog.set_level(logging.DEBUG)

    code, _ = cli(
        ["-v", "run", str(batch), "--method", "individual", "--batch-id", "looked-at",
         "--target-server", imaps(dovecot), "--target-method", "combined",
         "--target-combined-template", "{user}*{admin}", "--target-admin", NON_ASCII_MASTER_USER,
         "--target-admin-password-file", str(admin_file), "--ca-file", str(tls_files.ca_cert),
         "--workers", "1"]
    )  # fmt: skip
    status_code, status_json = cli(["status", "looked-at", "--json"])
    _, table = cli(["status", "looked-at"])

    assert code == 1  # not every mailbox is done
    assert status_code == 0
    printed = capsys.readouterr()
    seen: dict[str, str | bytes] = {
        "status --json": status_json,
        "status table": table,
        "stdout and stderr": printed.out + printed.err,
        "the -v log": caplog.text,
    }
    files = [p for p in state.rglob("*") if p.is_file()]
    assert any(".aof" in p.name for p in files)  # Redis wrote its append-only file
    seen |= {str(p): p.read_bytes() for p in files}
    return json.loads(status_json)["mailboxes"], seen


def _leaked(seen: dict[str, str | bytes]) -> list[str]:
    """Where any password of the suite shows (the admin's, a user's, a wrong one)."""
    return sorted(
        where for where, text in seen.items() if any(leaks(text, p) for p in BATCH_PASSWORDS)
    )


def _run_rows(
    store: StateStore,
    batch_id: str,
    options: RunOptions,
    method: AccessMethod,
    rows: list[tuple[str, str, str]],
    *,
    protocol: str = "imap",
) -> list:  # type: ignore[type-arg]
    """Each (SourceServer, SourceIdentity, TargetIdentity) read with `method` through the
    non-ASCII admin, run through runner.execute_job (what a Celery task runs)."""
    text = batch_text([source_row(server, source, "", target) for server, source, target in rows])
    result = parse_batch(
        text, method, admin=_admin(), combined_template="{user}*{admin}", protocol=protocol
    )
    assert not result.problems, result.problems
    box = SecretBox(new_key())
    jobs = build_jobs(result.jobs, options, box)
    store.create_batch(batch_id, {}, jobs)
    statuses = []
    for job in jobs:
        execute_job(store, batch_id, job.job_id, box)
        statuses.append(store.mailbox(batch_id, job.job_id))
    return statuses

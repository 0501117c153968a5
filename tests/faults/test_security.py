"""TLS is verified unless the operator says otherwise (and then it shows), for IMAP, POP3 and
Exchange, and no log line carries a message body, even at DEBUG."""

from __future__ import annotations

import itertools
import json
import logging
import ssl
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from celerykit import cli
from ews_server import EwsServer
from faultkit import (
    ExactlyOnce,
    digest,
    enqueue,
    ews_stored,
    exchange_folder,
    expected_at_target,
    leaks,
    stored,
)
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.mailgen import Fill
from support import EWS_ADMIN, EWS_PASSWORD, batch_password, imaps, write_source_batch

from migrator.batch import parse_server
from migrator.connectors.ews.settings import EwsAccess, EwsSettings
from migrator.connectors.ews.target import EwsTarget
from migrator.connectors.imap.source import ImapSource
from migrator.connectors.pop3.source import Pop3Source
from migrator.errors import PermanentError
from migrator.model import ConnectOptions, Credentials, MailboxJob
from migrator.secrets import Secret


def _job(dovecot: DovecotServer, user: str, password: str, protocol: str) -> MailboxJob:
    url = (
        f"imaps://127.0.0.1:{dovecot.imaps_port}"
        if protocol == "imap"
        else f"pop3s://127.0.0.1:{dovecot.pop3s_port}"
    )
    return MailboxJob(
        line=2,
        source_identity=user,
        source_server=parse_server(url, protocol="imap" if protocol == "imap" else "pop3"),
        source_credentials=Credentials(user, Secret(password)),
        source_root_folder=None,
        target_identity=user,
    )


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_certificates_are_verified_by_default_and_skipped_only_when_asked(
    dovecot: DovecotServer,
    make_user: MakeUser,
    monkeypatch: pytest.MonkeyPatch,
    protocol: str,
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # the system CAs do not know ours
    password = batch_password(f"tls-{protocol}")
    user = make_user(password)
    job = _job(dovecot, user, password, protocol)
    adapter = ImapSource if protocol == "imap" else Pop3Source

    with pytest.raises(PermanentError, match="TLS certificate not trusted"):
        adapter(job, ConnectOptions(timeout=10))

    insecure = adapter(job, ConnectOptions(timeout=10, insecure=True))
    assert [f.name for f in insecure.list_folders()]
    insecure.close()


def test_status_shows_a_batch_enqueued_with_insecure(
    dovecot: DovecotServer,
    make_user: MakeUser,
    tls_files: TlsFiles,
    celery_env: dict[str, str],
    tmp_path: Path,
) -> None:
    password = batch_password("insecure")
    source, target = make_user(password), make_user()
    url = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    checked = enqueue(tmp_path, url, url, tls_files.ca_cert, [(source, password, target)])
    (tmp_path / "again").mkdir()
    unchecked = enqueue(
        tmp_path / "again", url, url, tls_files.ca_cert, [(source, password, target)],
        "--insecure", "--batch-id", "insecure-batch",
    )  # fmt: skip

    code, text = cli(["status", unchecked])
    assert code == 0
    assert "TLS NOT verified: --insecure" in " ".join(text.split())
    code, text = cli(["status", checked])
    assert code == 0
    assert "NOT verified" not in text


@pytest.mark.parametrize("target_kind", ["imap", "ews"])
def test_no_log_line_carries_a_message_body_even_at_debug(
    target_kind: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    tmp_path: Path,
    local_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password(f"debug-log-{target_kind}")
    source = make_user(password)
    marker = "BODY-MARKER-5f1c2e"
    fill.append(
        source,
        "INBOX",
        [
            f"Subject: s{i}\r\nMessage-ID: <m{i}@x>\r\n\r\n{marker} line {i}\r\n".encode()
            for i in range(5)
        ],
        password,
    )
    if target_kind == "imap":
        target = make_user()
        options = ["--target-server", f"imaps://127.0.0.1:{dovecot.imaps_port}",
                   "--target-admin", MASTER_USER]  # fmt: skip
        monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
    else:
        # exchangelib logs each request and answer whole at DEBUG: the MIME (base64) and
        # the Authorization header (Basic: base64 of the login and password).
        ews: EwsServer = request.getfixturevalue("ews")
        target = request.getfixturevalue("make_ews_mailbox")()
        options = ["--target", "ews", "--target-server", ews.url, "--allow-plaintext",
                   "--target-admin", EWS_ADMIN, "--impersonate",
                   "--ews-version", "Exchange2016"]  # fmt: skip
        monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", EWS_PASSWORD)
    batch = write_source_batch(tmp_path / "batch.csv", imaps(dovecot), [(source, password, target)])
    caplog.set_level(logging.DEBUG)

    code, _ = cli(
        ["-v", "run", str(batch), "--method", "individual", *options,
         "--ca-file", str(tls_files.ca_cert), "--workers", "1"]
    )  # fmt: skip

    assert code == 0
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG was on
    assert not leaks(caplog.text, marker), "a message body reached the log"
    exactly_once.copied(source, password, target, ews=ews if target_kind == "ews" else None)


# -- Exchange over HTTPS --------------------------------------------------------------------

_exchange_numbers = itertools.count(1)


def _exchange_mailbox(server: EwsServer, mail: int = 0) -> tuple[str, list[bytes]]:
    """A new mailbox on `server` with `mail` messages in its Inbox."""
    smtp = f"tls{next(_exchange_numbers)}@example.com"
    server.add_user(smtp, EWS_PASSWORD)
    bodies = [
        f"Subject: m{n}\r\nMessage-ID: <tls.{smtp}.{n}@x>\r\n\r\nbody {n}\r\n".encode()
        for n in range(mail)
    ]
    for raw in bodies:
        server.store[smtp].deliver(raw)
    return smtp, bodies


@pytest.mark.parametrize("side", ["target", "source"])
def test_exchange_over_https_is_verified_by_default_and_skipped_only_when_asked(
    side: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ews_https_server: EwsServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    tmp_path: Path,
    local_state: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    exactly_once: ExactlyOnce,
) -> None:
    ews = ews_https_server
    imap = f"imaps://127.0.0.1:{dovecot.imaps_port}"
    # Python's default trust (SSL_CERT_FILE) covers the IMAP side; requests, under
    # exchangelib, trusts its own CA bundle only, which knows nothing of the test CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files.ca_cert))
    if side == "target":
        password = batch_password("https-target")
        source = make_user(password)
        fill(source, {"INBOX": 6}, password, size_hint=2_000)
        monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", EWS_PASSWORD)
        options = ["--target", "ews", "--target-server", ews.url, "--target-admin", EWS_ADMIN,
                   "--impersonate", "--ews-version", "Exchange2016"]  # fmt: skip
    else:
        source, sent = _exchange_mailbox(ews, mail=6)
        password = EWS_PASSWORD
        monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
        options = ["--source-type", "ews", "--source-ews-version", "Exchange2016",
                   "--target-server", imap, "--target-admin", MASTER_USER]  # fmt: skip

    def run(name: str, *tls: str) -> tuple[str, dict[str, Any]]:
        target = _exchange_mailbox(ews)[0] if side == "target" else make_user()
        server = imap if side == "target" else f"https://127.0.0.1:{ews.port}"
        batch = write_source_batch(tmp_path / f"{name}.csv", server, [(source, password, target)])
        cli(["run", str(batch), "--method", "individual", *options, *tls,
             "--batch-id", name, "--workers", "1"])  # fmt: skip
        code, text = cli(["status", name, "--json"])
        assert code == 0
        (row,) = json.loads(text)["mailboxes"]
        return target, row

    # Without --ca-file: refused at once, with the reason and the mailbox, nothing sent.
    calls_before = len(ews.calls)
    _, row = run("unverified")
    assert row["state"] == ("not_ready" if side == "target" else "failed")
    assert f"{side} mailbox " in row["last_error"]
    assert "TLS certificate not trusted" in row["last_error"]
    assert "--ca-file" in row["last_error"]
    assert "pass 1 ended" not in caplog.text  # never retried
    assert len(ews.calls) == calls_before  # no request got past the handshake

    # With the CA that signed the certificate: copied, each message once.
    target, row = run("verified", "--ca-file", str(tls_files.ca_cert))
    assert row["state"] == "synced", row
    if side == "target":
        exactly_once(
            expected_at_target(stored(dovecot, source, password, ssl_context), exchange_folder),
            ews_stored(ews, target),
        )
    else:
        exactly_once(
            {"INBOX": Counter(digest(raw) for raw in sent)},
            stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context),
        )

    # --insecure: copied too, and every status table says the check was off.
    _, row = run("insecure", "--insecure")
    assert row["state"] == "synced", row
    code, text = cli(["status", "insecure"])
    assert code == 0
    assert "TLS NOT verified: --insecure" in " ".join(text.split())


def test_one_batch_skipping_tls_checks_leaves_every_other_exchange_server_checked(
    ews_https_server: EwsServer, tls_files: TlsFiles
) -> None:
    # exchangelib has one HTTP adapter for the whole process (a Celery worker runs batch
    # after batch): --insecure or --ca-file must stay with the server they were given for.
    ews = ews_https_server
    mailbox, _ = _exchange_mailbox(ews)

    def open_target(host: str, **tls: Any) -> EwsTarget:
        settings = EwsSettings(
            endpoint=f"https://{host}:{ews.port}/EWS/Exchange.asmx",
            access=EwsAccess.IMPERSONATION,
            version="Exchange2016",
            connect=ConnectOptions(timeout=10, **tls),
        )
        return EwsTarget(settings, Credentials(EWS_ADMIN, Secret(EWS_PASSWORD)), mailbox)

    open_target("localhost", insecure=True).close()
    with pytest.raises(PermanentError, match=f"target mailbox {mailbox}: TLS certificate not"):
        open_target("127.0.0.1")
    open_target("127.0.0.1", ca_file=str(tls_files.ca_cert)).close()
    with pytest.raises(PermanentError, match="TLS certificate not trusted"):
        open_target("127.0.0.1")  # the next batch to that server gave no CA

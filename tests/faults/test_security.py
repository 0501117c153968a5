"""TLS is verified unless the operator says otherwise (and then it shows), and no log line
carries a message body, even at DEBUG."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
from faultkit import cli, enqueue, expected_at_target, stored
from imapclient import IMAPClient
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from support import batch_password, write_batch

from migrator.batch import Credentials, MailboxJob, parse_server
from migrator.errors import PermanentError
from migrator.imapconn import ConnectOptions
from migrator.secrets import Secret
from migrator.sources.imap import ImapSource
from migrator.sources.pop3 import Pop3Source


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


def test_no_log_line_carries_a_message_body_even_at_debug(
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    exactly_once: object,
) -> None:
    password = batch_password("debug-log")
    source, target = make_user(password), make_user()
    marker = "BODY-MARKER-5f1c2e"
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as client:
        client.login(source, password)
        for i in range(5):
            client.append(
                "INBOX",
                f"Subject: s{i}\r\nMessage-ID: <m{i}@x>\r\n\r\n{marker} line {i}\r\n".encode(),
            )
    batch = write_batch(
        tmp_path / "batch.csv",
        [{"SourceIdentity": source, "SourceServer": f"imaps://127.0.0.1:{dovecot.imaps_port}",
          "SourceLoginID": source, "SourcePassword": password, "TargetIdentity": target}],
    )  # fmt: skip
    for name in ("MIGRATOR_REDIS_URL", "MIGRATOR_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MIGRATOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
    caplog.set_level(logging.DEBUG)

    code, _ = cli(
        ["-v", "run", str(batch), "--method", "individual",
         "--target-server", f"imaps://127.0.0.1:{dovecot.imaps_port}",
         "--target-admin", MASTER_USER, "--ca-file", str(tls_files.ca_cert), "--workers", "1"]
    )  # fmt: skip

    assert code == 0
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG was on
    assert marker not in caplog.text
    exactly_once(  # type: ignore[operator]
        expected_at_target(stored(dovecot, source, password, ssl_context)),
        stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context),
    )

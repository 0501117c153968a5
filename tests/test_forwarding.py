"""Forwarding from the old mailboxes to the new, end to end.

Dovecot sources: `migrator forwarding set|remove|status` over ManageSieve; mail is then
delivered to the source user by dovecot-lda, the user's active Sieve script runs, and a
`redirect` leaves by SMTP to a sink on loopback.  Exchange sources: an inbox rule on the
EWS test server.  POP3 sources and hosts without ManageSieve: `manual`, never a silent
success.  The commands run in-process through `migrator.cli.main`, with this machine's
private Redis (no MIGRATOR_REDIS_URL), except where a Celery worker is the point.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ews_server import EwsServer, ews_account
from exchangelib.properties import Actions, Rule
from imapclient import IMAPClient
from servers.celery_worker import Workers
from servers.certs import TlsFiles
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    DovecotServer,
    MakeUser,
)
from servers.ports import free_port
from servers.smtp_sink import SmtpSink
from support import EWS_PASSWORD, batch_password, imaps, write_batch

from migrator.cli import main
from migrator.connectors.imap.managesieve import SieveClient
from migrator.forwarding import ForwardState, sieve_remove, sieve_set
from migrator.secrets import Secret

# The user's own rule, as a webmail would have stored it: file list mail into a folder.
# Mixed line ends and a non-ASCII comment, so "byte for byte" means something.
USER_SCRIPT = (
    'require ["fileinto"];\r\n'
    "# Règle de l'utilisateur: listes\n"
    'if header :contains "Subject" "[list]" {\r\n'
    '  fileinto "Lists";\r\n'
    "}\n"
)


@pytest.fixture
def cli_env(local_state: Path, tmp_path: Path) -> Path:
    """`migrator` with its private Redis; the folder the test writes its CSV files to."""
    return tmp_path


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as server:
        yield server


def run_json(
    capsys: pytest.CaptureFixture[str], action: str, csv: Path, *args: str
) -> tuple[int, list[dict[str, str]]]:
    capsys.readouterr()
    code = main(["forwarding", action, str(csv), "--json", *args])
    return code, json.loads(capsys.readouterr().out)


@dataclass
class Site:
    """The test Dovecot as the old mail system, and `migrator forwarding` run against it."""

    dovecot: DovecotServer
    context: ssl.SSLContext
    ca: Path
    dir: Path
    capsys: pytest.CaptureFixture[str]
    make_user: MakeUser

    def pair(self) -> tuple[str, str]:
        return self.make_user(), self.make_user(prefix="new")

    def sieve_args(self) -> list[str]:
        return [
            "--method", "individual", "--sieve-port", str(self.dovecot.sieve_port),
            "--ca-file", str(self.ca),
        ]  # fmt: skip

    def csv(
        self,
        rows: list[tuple[str, str]],
        server: str | None = None,
        name: str = "b.csv",
        password: str = DEFAULT_USER_PASSWORD,
    ) -> Path:
        return write_batch(
            self.dir / name,
            [
                {
                    "SourceIdentity": source,
                    "SourceServer": server or imaps(self.dovecot),
                    "SourceLoginID": source,
                    "SourcePassword": password,
                    "TargetIdentity": target,
                }
                for source, target in rows
            ],
        )

    def forwarding(self, action: str, csv: Path, *args: str) -> tuple[int, list[dict[str, str]]]:
        """`migrator forwarding ACTION CSV --json ARGS` (the Sieve options by default)."""
        return run_json(self.capsys, action, csv, *(args or self.sieve_args()))

    def sieve(self, user: str) -> SieveClient:
        port = self.dovecot.sieve_port
        client = SieveClient.connect("127.0.0.1", port, context=self.context, timeout=10)
        client.authenticate(user, Secret(DEFAULT_USER_PASSWORD))
        return client

    def install_user_script(self, user: str) -> None:
        with self.imap(user) as imap:
            imap.create_folder("Lists")
        with self.sieve(user) as client:
            client.put_script("roundcube", USER_SCRIPT)
            client.set_active("roundcube")

    def imap(self, user: str) -> IMAPClient:
        port = self.dovecot.imaps_port
        imap = IMAPClient("127.0.0.1", port, ssl=True, ssl_context=self.context)
        imap.login(user, DEFAULT_USER_PASSWORD)
        return imap

    def folders_holding(self, user: str, msgid: str) -> list[str]:
        found = []
        with self.imap(user) as imap:
            for _flags, _delim, name in imap.list_folders():
                imap.select_folder(name, readonly=True)
                found += [str(name)] * len(imap.search(["HEADER", "Message-ID", msgid]))
        return found


@pytest.fixture
def site(
    cli_env: Path,
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    capsys: pytest.CaptureFixture[str],
) -> Site:
    return Site(dovecot, ssl_context, tls_files.ca_cert, cli_env, capsys, make_user)


def message(n: int, subject: str) -> bytes:
    return (
        f"From: Sender {n} <sender{n}@example.org>\r\nTo: someone@example.test\r\n"
        f"Subject: {subject}\r\nMessage-ID: <fwd{n}.{time.time_ns()}@example.org>\r\n"
        f"Date: Sat, 28 Nov 2026 10:00:00 +0000\r\n\r\nBody {n}\r\n"
    ).encode()


def message_id(raw: bytes) -> str:
    line = next(x for x in raw.split(b"\r\n") if x.startswith(b"Message-ID:"))
    return line.split(b":", 1)[1].strip().decode()


# -- Dovecot: Sieve over ManageSieve ---------------------------------------------------------


def test_set_forwards_new_mail_keeps_a_copy_and_the_users_rule_and_remove_restores_it(
    site: Site, sink: SmtpSink
) -> None:
    source, target = site.pair()
    site.install_user_script(source)
    csv = site.csv([(source, target)])

    code, rows = site.forwarding("set", csv)
    assert code == 0, rows
    assert rows[0]["state"] == "set" and rows[0]["method"] == "sieve"
    assert rows[0]["target"] == target and "roundcube" in rows[0]["detail"]

    plain, listed = message(1, "Hello"), message(2, "[list] weekly news")
    site.dovecot.deliver(source, plain, submission_host=sink.address)
    site.dovecot.deliver(source, listed, submission_host=sink.address)
    sent = sink.wait_for(2)
    assert [d.rcpt_tos for d in sent] == [(target,), (target,)]
    assert [message_id(d.content) for d in sent] == [message_id(plain), message_id(listed)]
    # A copy stays behind, and the user's own rule still files list mail.
    assert site.folders_holding(source, message_id(plain)) == ["INBOX"]
    assert site.folders_holding(source, message_id(listed)) == ["Lists"]

    assert site.forwarding("status", csv)[1][0]["state"] == "set"
    code, again = site.forwarding("set", csv)
    assert code == 0 and again[0]["detail"] == "already set"

    code, rows = site.forwarding("remove", csv)
    assert code == 0 and rows[0]["state"] == "removed"
    with site.sieve(source) as client:
        assert [(s.name, s.active) for s in client.list_scripts()] == [("roundcube", True)]
        assert client.get_script("roundcube") == USER_SCRIPT  # byte for byte

    after = message(3, "[list] after the wave")
    # dovecot-lda submits a redirect before it exits, and deliver() waits for it to exit:
    # a forward would be at the sink by now.
    site.dovecot.deliver(source, after, submission_host=sink.address)
    assert len(sink.deliveries()) == 2
    assert site.folders_holding(source, message_id(after)) == ["Lists"]
    assert site.forwarding("status", csv)[1][0]["state"] == "not_set"
    code, rows = site.forwarding("remove", csv)
    assert code == 0 and rows[0]["detail"] == "was not set"


class WithoutInclude:
    """The test Dovecot's session, as a server without the include extension shows it."""

    def __init__(self, client: SieveClient) -> None:
        self._client = client

    def sieve_extensions(self) -> set[str]:
        return self._client.sieve_extensions() - {"include"}

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)


def test_without_include_the_users_script_is_wrapped_and_still_works(
    site: Site, sink: SmtpSink
) -> None:
    source, target = site.pair()
    site.install_user_script(source)
    with site.sieve(source) as client:
        outcome = sieve_set(WithoutInclude(client), target)  # type: ignore[arg-type]
        assert outcome.state is ForwardState.SET and "wrapping" in outcome.detail
        wrapped = client.get_script("migrator-forward")
        assert wrapped.endswith(USER_SCRIPT[USER_SCRIPT.index("if header") :])
    listed = message(1, "[list] wrapped")
    site.dovecot.deliver(source, listed, submission_host=sink.address)
    assert [d.rcpt_tos for d in sink.wait_for(1)] == [(target,)]
    assert site.folders_holding(source, message_id(listed)) == ["Lists"]
    with site.sieve(source) as client:
        assert sieve_remove(client).state is ForwardState.REMOVED
        assert client.get_script("roundcube") == USER_SCRIPT
        assert [s.name for s in client.list_scripts() if s.active] == ["roundcube"]


def test_a_mailbox_without_a_script_of_its_own_gets_none_back_after_remove(
    site: Site, sink: SmtpSink
) -> None:
    source, target = site.pair()
    csv = site.csv([(source, target)])
    assert site.forwarding("set", csv)[0] == 0
    site.dovecot.deliver(source, message(1, "Hi"), submission_host=sink.address)
    assert [d.rcpt_tos for d in sink.wait_for(1)] == [(target,)]
    assert site.forwarding("remove", csv)[0] == 0
    with site.sieve(source) as client:
        assert client.list_scripts() == []


def test_a_master_user_login_sets_the_users_own_script(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Combined admin login (`user*admin`, the admin's password), as for the copy."""
    source, target = site.pair()
    site.install_user_script(source)
    csv = site.csv([(source, target)], password="")
    monkeypatch.setenv("MIGRATOR_ADMIN_PASSWORD", MASTER_PASSWORD)
    template = "{user}" + site.dovecot.master_user_separator + "{admin}"
    args = ["--method", "combined", "--admin", MASTER_USER, "--combined-template", template,
            "--sieve-port", str(site.dovecot.sieve_port),
            "--ca-file", str(site.ca)]  # fmt: skip
    code, rows = site.forwarding("set", csv, *args)
    assert code == 0, rows
    with site.sieve(source) as client:
        active = [s.name for s in client.list_scripts() if s.active]
        assert active == ["migrator-forward"]
        assert f'redirect :copy "{target}";' in client.get_script("migrator-forward")
    assert site.forwarding("remove", csv, *args)[0] == 0


def test_forwarding_to_the_source_itself_is_refused_as_a_loop(site: Site) -> None:
    source = site.make_user()
    csv = site.csv([(source, source.upper())])
    code, rows = site.forwarding("set", csv)
    assert code == 1
    assert rows[0]["state"] == "refused" and "loop" in rows[0]["detail"]
    with site.sieve(source) as client:
        assert client.list_scripts() == []


def test_pop3_sources_and_hosts_without_managesieve_are_manual_with_the_instruction(
    site: Site,
) -> None:
    source, target = site.pair()
    pop = site.csv([(source, target)], f"pop3s://127.0.0.1:{site.dovecot.pop3s_port}", "p.csv")
    code, rows = site.forwarding("set", pop, "--source-type", "pop", *site.sieve_args())
    assert code == 1
    assert rows[0]["state"] == "manual"
    assert "POP3" in rows[0]["detail"] and f'redirect :copy "{target}"' in rows[0]["detail"]

    imap = site.csv([(source, target)], name="i.csv")
    closed = free_port()
    args = ["--method", "individual", "--sieve-port", str(closed),
            "--ca-file", str(site.ca)]  # fmt: skip
    code, rows = site.forwarding("set", imap, *args)
    assert code == 1
    assert rows[0]["state"] == "manual"
    assert f"no ManageSieve service at 127.0.0.1:{closed}" in rows[0]["detail"]


def test_gmail_sources_are_manual_with_gmails_own_steps(site: Site) -> None:
    source, target = site.pair()
    csv = site.csv([(source, target)], name="g.csv")
    args = ["--source-type", "gmail", *site.sieve_args()]
    for action, words in (
        ("set", ["Forwarding and POP/IMAP", f"Add a forwarding address: {target}",
                 "keep Gmail's copy in the Inbox", "Routing"]),
        ("remove", ["Disable forwarding", target]),
        ("status", ["check by hand", "Forwarding and POP/IMAP"]),
    ):  # fmt: skip
        code, rows = site.forwarding(action, csv, *args)
        assert code == 1
        assert rows[0]["state"] == "manual" and rows[0]["method"] == "manual"
        assert all(word in rows[0]["detail"] for word in words), rows[0]["detail"]
    with site.sieve(source) as client:  # nothing was tried over ManageSieve
        assert client.list_scripts() == []


def test_a_wrong_password_fails_that_mailbox_without_showing_the_password(site: Site) -> None:
    source, target = site.pair()
    wrong = batch_password("forward-wrong")
    csv = site.csv([(source, target)], password=wrong)
    site.capsys.readouterr()
    code = main(["forwarding", "set", str(csv), "--json", *site.sieve_args()])
    out = site.capsys.readouterr()
    assert code == 1
    row = json.loads(out.out)[0]
    assert row["state"] == "failed" and row["source"] == source
    assert "refused" in row["detail"] and source in row["detail"]
    assert wrong not in out.out + out.err


def test_certificates_are_checked_by_default(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test CA is not trusted unless given: ManageSieve refuses; --insecure goes on,
    and says so."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    source, target = site.pair()
    csv = site.csv([(source, target)])
    port = ["--method", "individual", "--sieve-port", str(site.dovecot.sieve_port)]
    code, rows = site.forwarding("set", csv, *port)
    assert code == 1 and "certificate not trusted" in rows[0]["detail"]
    site.capsys.readouterr()
    assert main(["forwarding", "set", str(csv), "--insecure", *port]) == 0
    assert "NOT verified" in site.capsys.readouterr().err
    assert main(["forwarding", "remove", str(csv), "--insecure", *port]) == 0


def test_forward_after_copy_sets_forwarding_when_the_mailbox_is_done(
    site: Site, sink: SmtpSink
) -> None:
    source, target = site.pair()
    site.dovecot.deliver(source, message(1, "Before the wave"))
    csv = site.csv([(source, target)])
    secret = site.dir / "target.pw"
    secret.write_text(MASTER_PASSWORD)
    site.capsys.readouterr()
    code = main(
        ["run", str(csv), "--method", "individual", "--target-server", imaps(site.dovecot),
         "--target-admin", MASTER_USER, "--target-admin-password-file", str(secret),
         "--ca-file", str(site.ca), "--forward-after-copy",
         "--sieve-port", str(site.dovecot.sieve_port)]
    )  # fmt: skip
    out = site.capsys.readouterr().out
    assert code == 0, out
    assert "forwarding after copy" in out
    with site.sieve(source) as client:
        assert [s.name for s in client.list_scripts() if s.active] == ["migrator-forward"]
    site.dovecot.deliver(source, message(2, "During the wave"), submission_host=sink.address)
    assert [d.rcpt_tos for d in sink.wait_for(1)] == [(target,)]
    code, rows = site.forwarding("status", csv)
    assert rows[0]["state"] == "set" and rows[0]["target"] == target


def test_each_mailbox_is_a_celery_task_when_workers_share_a_redis(
    site: Site, celery_env: dict[str, str], workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = [site.pair() for _ in range(3)]
    csv = site.csv(pairs)
    # The site's commands keep a private Redis; these share the workers' instead.
    for name in ("MIGRATOR_REDIS_URL", "MIGRATOR_SECRET_KEY"):
        monkeypatch.setenv(name, celery_env[name])
    workers.start(concurrency=2)
    args = [*site.sieve_args(), "--wait", "120"]
    code, rows = site.forwarding("set", csv, *args)
    assert code == 0, rows
    assert [r["state"] for r in rows] == ["set"] * 3
    code, rows = site.forwarding("remove", csv, *args)
    assert [r["state"] for r in rows] == ["removed"] * 3
    for source, _ in pairs:
        with site.sieve(source) as client:
            assert client.list_scripts() == []


# -- Exchange: an inbox rule -----------------------------------------------------------------


def test_exchange_sources_get_a_tagged_redirect_rule_and_remove_deletes_only_it(
    cli_env: Path,
    ews: EwsServer,
    make_ews_mailbox: MakeUser,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source, target = make_ews_mailbox(), "new.owner@example.net"
    account = ews_account(ews, source, password=EWS_PASSWORD)
    Rule(
        account=account,
        display_name="Mark newsletters read",
        priority=1,
        is_enabled=True,
        actions=Actions(mark_as_read=True),
    ).save()
    csv = write_batch(
        cli_env / "ews.csv",
        [{"SourceIdentity": source, "SourceServer": f"http://127.0.0.1:{ews.port}",
          "SourceLoginID": source, "SourcePassword": EWS_PASSWORD, "TargetIdentity": target}],
    )  # fmt: skip
    args = ["--method", "individual", "--source-type", "ews", "--allow-plaintext",
            "--source-ews-version", "Exchange2016"]  # fmt: skip

    code, rows = run_json(capsys, "set", csv, *args)
    assert code == 0, rows
    assert rows[0]["method"] == "ews-rule"
    rules = {r.display_name: r for r in account.rules}
    ours = rules[f"[migrator] forward to {target}"]
    assert [a.email_address for a in ours.actions.redirect_to_recipients] == [target]
    assert not ours.actions.delete and not ours.actions.move_to_folder  # a copy stays
    assert "Mark newsletters read" in rules
    assert run_json(capsys, "set", csv, *args)[1][0]["detail"] == "already set"
    assert len(account.rules) == 2

    code, rows = run_json(capsys, "remove", csv, *args)
    assert code == 0 and rows[0]["state"] == "removed"
    assert [r.display_name for r in account.rules] == ["Mark newsletters read"]
    assert run_json(capsys, "status", csv, *args)[1][0]["state"] == "not_set"

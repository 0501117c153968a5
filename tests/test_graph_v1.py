"""`--graph-api v1.0`: into Graph without a beta call, by JSON create.  Each message is
made not a draft, with its read state, flag, dates and source key set at creation, its
body and attachments carried (3 MB and more through an upload session), and a rerun after
Redis loss makes none."""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage

import redis
from graph_server import GraphServer
from graphkit import GraphApp, copy_to_graph
from servers.certs import TlsFiles
from servers.dovecot import DovecotServer, MakeUser
from servers.mailgen import Fill
from servers.oauth_server import OAuthServer
from support import imaps

from migrator.report import MailboxState
from migrator.state import StateStore

BIG = bytes(range(256)) * (
    4 * 1024 * 1024 // 256 + 7
)  # 4 MB and a little: two PUTs of an upload session


def _with_attachments() -> bytes:
    message = EmailMessage()
    message["From"] = "Ann Example <ann@example.org>"
    message["To"] = "bob@example.test, Cy <cy@example.test>"
    message["Subject"] = "Report and data"
    message["Message-ID"] = "<report-1@example.org>"
    message["Date"] = "Tue, 4 Jun 2024 09:30:00 +0000"
    message.set_content("See the attached files.\n")
    message.add_alternative("<p>See the <b>attached</b> files.</p>\n", subtype="html")
    message.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="small.csv")
    message.add_attachment(BIG, maintype="application", subtype="octet-stream", filename="big.bin")
    return message.as_bytes()


def test_v1_json_create_keeps_state_dates_body_and_attachments_and_a_rerun_makes_none(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: object,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    password = "Src-Pw-graph-v1!"
    source, target = make_user(password), make_graph_mailbox()  # type: ignore[operator]
    sent = fill(source, {"INBOX": 15, "Projects/2024": 5}, password, size_hint=1200)
    when = datetime(2024, 6, 4, 9, 31, 5, tzinfo=UTC)
    raw = _with_attachments()
    fill.append(source, "INBOX", [(raw, ("\\Seen", "\\Flagged"), when)], password)
    store = StateStore.from_url(redis_url)
    imported = graph.imported

    def copy(batch_id: str) -> object:
        return copy_to_graph(
            store, graph, oauth_server, graph_app, tls_files.ca_cert, imaps(dovecot),
            source, password, target, batch_id=batch_id, api="v1.0",
        )  # fmt: skip

    status = copy("v1a")

    assert status.state is MailboxState.SYNCED, status  # type: ignore[attr-defined]
    assert graph.imported == imported  # no beta call
    made = graph.store.all_messages(target)
    assert len(made) == len(sent) + 1
    by_subject = {m.fields.get("subject"): m for m in made}
    for original in sent:
        subject = next(
            line.split(b":", 1)[1].strip().decode()
            for line in original.raw.split(b"\r\n")
            if line.lower().startswith(b"subject:")
        )
        copy_of = by_subject[subject]
        assert not copy_of.is_draft
        assert copy_of.received == original.internaldate
        assert copy_of.is_read == ("\\Seen" in original.flags)
        assert (copy_of.flag_status == "flagged") == ("\\Flagged" in original.flags)
    report = by_subject["Report and data"]
    assert (report.is_draft, report.is_read, report.flag_status) == (False, True, "flagged")
    assert report.received == when
    assert report.sent == datetime(2024, 6, 4, 9, 30, tzinfo=UTC)
    assert report.fields["body"]["contentType"] == "html"
    assert "<b>attached</b>" in report.fields["body"]["content"]
    assert report.fields["internetMessageId"] == "<report-1@example.org>"
    assert [r["emailAddress"]["address"] for r in report.fields["toRecipients"]] == [
        "bob@example.test",
        "cy@example.test",
    ]
    assert {a.name: a.content for a in report.attachments} == {
        "small.csv": b"a,b\n1,2\n",
        "big.bin": BIG,
    }

    redis.Redis.from_url(redis_url).flushall()
    created = graph.created
    again = copy("v1b")

    assert again.state is MailboxState.SYNCED, again  # type: ignore[attr-defined]
    assert graph.created == created  # each recognised by its source key
    assert len(graph.store.all_messages(target)) == len(sent) + 1

"""Gmail as a source, through the Gmail proxy in front of the test Dovecot, one mailbox in
this process (copy_mailbox): each message once under the folder rule, once per label
with `copies`, archived mail in Archive, Starred as \\Flagged, other labels as keywords,
Spam and Trash only when asked for, a rerun after Redis loss copying nothing."""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from ews_server import EwsServer
from gmailkit import (
    INBOX,
    STARRED,
    GmailAccountMaker,
    copies_folders,
    expected,
    gmail_messages,
    held,
    rule_folder,
)
from graph_server import GraphServer
from graphkit import GraphApp, copy_to_graph
from imapclient import IMAPClient
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.oauth_server import OAuthServer
from support import CopyMailbox, batch_job, digest, snapshot, source_row

from migrator.connectors import connector
from migrator.foldermap import default_folder_map
from migrator.gmail import GmailSettings, LabelMode, label_keyword
from migrator.model import ConnectOptions
from migrator.report import MailboxState
from migrator.state import StateStore


def test_each_message_once_under_the_rule_with_starred_flagged_and_labels_as_keywords(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    redis_url: str,
) -> None:
    account = gmail_account(gmail_messages(100))
    target = make_user()

    status = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url
    )

    assert status.state is MailboxState.SYNCED, status
    wanted = expected(account.messages)
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted
    assert status.copied_messages == sum(sum(c.values()) for c in wanted.values())
    assert sum(wanted["Archive"].values()) == 15  # 10 archived, 5 with Important alone
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    flags = {s.sha256: s.flags for items in view.values() for s in items}
    for message in account.messages:
        if rule_folder(message) is None:
            continue
        got = flags[digest(message.raw)]
        assert ("\\Flagged" in got) == (STARRED in message.labels), message.labels
        others = [lb for lb in message.user_labels if rule_folder(message) != lb]
        # Dovecot keeps keywords: the labels its folder does not say.
        assert {label_keyword(lb) for lb in others} <= got, (message.labels, got)

    # Redis lost: the rerun recognises every copy in the folder the rule picks again.
    redis.Redis.from_url(redis_url).flushall()
    again = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        batch_id="b2",
    )  # fmt: skip
    assert again.state is MailboxState.SYNCED, again
    assert again.copied_messages == 0
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted


def test_copies_puts_one_copy_in_each_labels_folder(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    account = gmail_account(gmail_messages(60, seed=1))
    target = make_user()
    settings = GmailSettings(labels=LabelMode.COPIES)
    caplog.set_level(logging.WARNING)

    status = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        source_settings=settings,
    )  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    wanted = expected(account.messages, copies_folders)
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted
    # One pass: a message two labels want is read once and sent twice, none left behind.
    assert not [r for r in caplog.records if "pass 1 ended" in r.getMessage()]
    again = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        source_settings=settings, batch_id="b2",
    )  # fmt: skip
    assert again.copied_messages == 0


def test_spam_and_trash_only_when_asked_for(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
) -> None:
    account = gmail_account(gmail_messages(40, seed=2))
    target = make_user()

    status = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        source_settings=GmailSettings(include_spam_trash=True),
    )  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    wanted = expected(account.messages)
    for message in account.messages:
        folder = rule_folder(message, spam_trash=True)
        if folder in ("Junk", "Trash"):
            wanted.setdefault(folder, Counter())[digest(message.raw)] += 1
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted
    assert sum(wanted["Junk"].values()) == 2 and sum(wanted["Trash"].values()) == 2


def test_a_server_without_x_gm_ext_1_is_plain_imap_unless_told_it_is_gmail(
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
) -> None:
    source, target = make_user(), make_user()
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.plain_login(source, DEFAULT_USER_PASSWORD)
        c.append("INBOX", gmail_messages(1)[0].raw)

    forced = copy_mailbox(source, target, source_settings=GmailSettings(forced=True), batch_id="f")

    assert forced.state is MailboxState.FAILED
    assert "X-GM-EXT-1" in forced.last_error
    plain = copy_mailbox(source, target)
    assert plain.state is MailboxState.SYNCED and plain.copied_messages == 1


def test_on_an_exchange_target_the_other_labels_become_categories(
    gmail_account: GmailAccountMaker, copy_mailbox: CopyMailbox, ews: EwsServer
) -> None:
    account = gmail_account(gmail_messages(40, seed=5))
    target = "gmail-to-exchange@example.com"
    ews.add_user(target, "x")

    status = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        into=ews,
    )  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    by_digest = {digest(m.raw): m for m in account.messages}
    box = ews.store[target]
    seen = 0
    for folder in box.folders.values():
        for item in box.items_in(folder.id):
            message = by_digest[digest(item.mime)]
            element = item.props.get("Categories")
            got = [s.text for s in element] if element is not None else []
            others = [lb for lb in message.user_labels if rule_folder(message) != lb]
            assert sorted(got) == sorted(others), (message.labels, got)
            seen += 1
    assert seen == sum(1 for m in account.messages if rule_folder(m) is not None)


def test_the_inventory_of_a_gmail_mailbox_counts_each_message_once_where_it_goes(
    gmail_account: GmailAccountMaker, tls_files: TlsFiles
) -> None:
    account = gmail_account(gmail_messages(60, seed=8))
    row = source_row(account.proxy.url, account.login, account.password, "t@example.test")
    job = batch_job(row)
    options = ConnectOptions(timeout=30, ca_file=str(tls_files.ca_cert))

    survey = connector("imap").survey(job, options, default_folder_map())

    copied = [m for m in account.messages if rule_folder(m) is not None]
    assert survey.size_bytes == sum(len(m.raw) for m in copied)
    names = {"INBOX": "Inbox", "Sent": "Sent Items"}
    wanted = Counter(names.get(rule_folder(m) or "", rule_folder(m)) for m in copied)
    assert survey.items == dict(wanted)


def test_labels_changed_between_two_runs_send_nothing_again(
    gmail_account: GmailAccountMaker,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
) -> None:
    account = gmail_account(gmail_messages(40, seed=9))
    target = make_user()
    first = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url
    )
    assert first.state is MailboxState.SYNCED, first
    wanted = expected(account.messages)
    # The user archives an Inbox message and labels an archived one, between two runs.
    inbox_only = next(m for m in account.messages if m.labels == (INBOX,))
    archived = next(m for m in account.messages if not m.labels)
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.plain_login(account.login, account.password)
        c.select_folder(INBOX)
        fetched = c.fetch(c.search("ALL"), ["BODY.PEEK[]"])
        uid = next(u for u, d in fetched.items() if d[b"BODY[]"] == inbox_only.raw)
        c.delete_messages([uid])
        c.expunge()
        c.append("Personal", archived.raw, archived.flags, archived.internaldate)

    again = copy_mailbox(
        account.login, target, password=account.password, source_url=account.proxy.url,
        batch_id="b2",
    )  # fmt: skip

    assert again.state is MailboxState.SYNCED, again
    assert again.copied_messages == 0  # each went once, where the rule put it then
    assert held(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context) == wanted


def test_on_a_graph_target_the_other_labels_become_categories(
    gmail_account: GmailAccountMaker,
    graph: GraphServer,
    oauth_server: OAuthServer,
    graph_app: GraphApp,
    make_graph_mailbox: Callable[..., str],
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    account = gmail_account(gmail_messages(40, seed=12))
    target = make_graph_mailbox()

    status = copy_to_graph(
        StateStore.from_url(redis_url), graph, oauth_server, graph_app, tls_files.ca_cert,
        account.proxy.url, account.login, account.password, target,
    )  # fmt: skip

    assert status.state is MailboxState.SYNCED, status
    by_digest = {digest(m.raw): m for m in account.messages}
    seen = 0
    for message in graph.store.all_messages(target):
        gmail_message = by_digest[digest(message.mime)]
        others = [lb for lb in gmail_message.user_labels if rule_folder(gmail_message) != lb]
        labels = [c for c in message.categories if not c.startswith("$")]  # Graph keeps $ ones
        assert sorted(labels) == sorted(others), (gmail_message.labels, message.categories)
        seen += 1
    assert seen == sum(1 for m in account.messages if rule_folder(m) is not None)

"""The Gmail-shaped test account behind servers.gmail_proxy: what the Gmail tests rely on."""

from __future__ import annotations

import ssl

from gmailkit import (
    IMPORTANT,
    INBOX,
    SENT,
    SPAM,
    STARRED,
    TRASH,
    GmailAccountMaker,
    gmail_messages,
)
from imapclient import IMAPClient, imap_utf7
from servers.dovecot_config import ALL_MAIL_FOLDER
from servers.gmail_proxy import gmail_msgid
from support import digest

_LABELS = {
    INBOX: "\\Inbox",
    SENT: "\\Sent",
    STARRED: "\\Starred",
    IMPORTANT: "\\Important",
    SPAM: "\\Spam",
    TRASH: "\\Trash",
}


def test_proxy_answers_as_gmail_and_passes_the_rest_through(
    gmail_account: GmailAccountMaker, ssl_context: ssl.SSLContext
) -> None:
    messages = gmail_messages(40)
    account = gmail_account(messages)
    by_digest = {digest(m.raw): m for m in messages}
    with IMAPClient("127.0.0.1", account.proxy.port, ssl=True, ssl_context=ssl_context) as c:
        assert b"X-GM-EXT-1" in c.capabilities()
        c.plain_login(account.login, account.password)
        assert c.has_capability("X-GM-EXT-1")
        flags = {name: {f.lower() for f in fl} for fl, _, name in c.list_folders()}
        assert b"\\all" in flags[ALL_MAIL_FOLDER] and b"\\flagged" in flags[STARRED]
        assert b"\\junk" in flags[SPAM] and b"\\sent" in flags[SENT]
        ids: dict[str, set[int]] = {}
        for folder in (INBOX, "Work", ALL_MAIL_FOLDER, SENT):
            c.select_folder(folder, readonly=True)
            items = ["X-GM-MSGID", "X-GM-LABELS", "BODY.PEEK[]", "FLAGS"]
            fetched = c.fetch(c.search("ALL"), items)
            in_folder = [m for m in messages if folder in m.labels or (
                folder == ALL_MAIL_FOLDER and m.in_all_mail)]  # fmt: skip
            assert len(fetched) == len(in_folder)
            for data in fetched.values():
                message = by_digest[digest(data[b"BODY[]"])]  # bytes pass through unchanged
                msgid = data[b"X-GM-MSGID"]
                assert msgid == gmail_msgid(message.raw.split(b"\r\n\r\n")[0])
                ids.setdefault(digest(message.raw), set()).add(msgid)
                labels = {imap_utf7.decode(label) for label in data[b"X-GM-LABELS"]}
                assert labels == {_LABELS.get(f, f) for f in message.labels}
        # One id per message, whichever folder shows it.
        assert all(len(found) == 1 for found in ids.values())
        # A FETCH without Gmail's items is Dovecot's own answer.
        c.select_folder(INBOX, readonly=True)
        plain = c.fetch(c.search("ALL"), ["FLAGS"])
        assert all(b"X-GM-MSGID" not in data for data in plain.values())
    assert account.proxy.gmail_fetches > 0

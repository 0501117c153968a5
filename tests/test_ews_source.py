"""Exchange as the source: EWS to IMAP (Dovecot) and EWS to EWS, through the copier and the
runner, with a source mailbox holding mail in three folders, a calendar item and a contact."""

from __future__ import annotations

import ssl
from collections import Counter

from ews_server import EwsServer
from ewskit import SEEDED_TO_EWS_FOLDER, seed
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from support import (
    EWS_PASSWORD,
    digest,
    ews_target_options,
    from_exchange,
    run_in_process,
    run_options,
    snapshot,
)

from migrator.prepare import RunOptions
from migrator.report import MailboxState
from migrator.state import MailboxStatus, StateStore

# Source folder (as EWS names it) -> where the folder map sends it on Dovecot.
DOVECOT_FOLDER = {"inbox": "INBOX", "sentitems": "Sent", "Projects": "INBOX/Projects"}


def run_from_ews(
    ews: EwsServer, redis_url: str, source: str, target: str, options: RunOptions
) -> MailboxStatus:
    store = StateStore.from_url(redis_url)
    url = f"http://127.0.0.1:{ews.port}"
    return run_in_process(store, "b1", options, url, source, EWS_PASSWORD, target)


def test_ews_to_imap_copies_mail_exactly_and_counts_the_rest_as_skipped(
    dovecot: DovecotServer,
    make_user: MakeUser,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
) -> None:
    source, target = make_ews_mailbox(), make_user()
    seeded = seed(ews, source)
    options = from_exchange(run_options(dovecot, tls_files.ca_cert))

    status = run_from_ews(ews, redis_url, source, target, options)

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == len(seeded)
    assert status.skipped_non_mail == 2  # the meeting and the contact: IMAP cannot hold them
    view = snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    for folder, name in DOVECOT_FOLDER.items():
        wanted = [s for s in seeded if s.folder == folder]
        assert Counter(m.sha256 for m in view[name]) == Counter(digest(s.raw) for s in wanted)
        by_hash = {digest(s.raw): s for s in wanted}
        for stored in view[name]:
            original = by_hash[stored.sha256]
            assert stored.internaldate == original.received
            assert ("\\Seen" in stored.flags) == original.is_read
            assert ("\\Flagged" in stored.flags) == original.flagged


def test_ews_to_ews_copies_mail_meeting_and_contact_once_even_when_run_again(
    make_ews_mailbox: MakeUser, ews: EwsServer, tls_files: TlsFiles, redis_url: str
) -> None:
    source, target = make_ews_mailbox(), make_ews_mailbox()
    seeded = seed(ews, source)
    options = from_exchange(ews_target_options(ews.url, tls_files.ca_cert))

    status = run_from_ews(ews, redis_url, source, target, options)
    StateStore.from_url(redis_url).client.flushall()
    again = run_from_ews(ews, redis_url, source, target, options)

    assert status.state is MailboxState.SYNCED, status
    assert status.copied_non_mail == 2 and status.skipped_non_mail == 0
    assert again.state is MailboxState.SYNCED, again
    assert again.copied_messages == 0 and again.copied_non_mail == 0
    for folder, path in SEEDED_TO_EWS_FOLDER.items():
        items = ews.store.items_at(target, path)
        wanted = {s.raw: s for s in seeded if s.folder == folder}
        assert Counter(i.mime for i in items) == Counter(
            s.raw for s in seeded if s.folder == folder
        )
        for item in items:
            assert item.received == wanted[item.mime].received
            assert item.is_read == wanted[item.mime].is_read
    (meeting,) = ews.store.messages(target, "calendar")
    assert meeting.item_class == "IPM.Appointment"
    assert meeting.props["Subject"].text == "Cutover"
    (contact,) = ews.store.messages(target, "contacts")
    assert contact.props["GivenName"].text == "Bob"

"""An EWS source read incrementally: SyncFolderItems from the SyncState a listing took,
paged by MaxChangesReturned, new items, flag and read-state changes and deletions as the
FolderChanges an IMAP source gives; a SyncState the server refuses lists the folder
whole, saying so."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from ews_server import EwsServer, ews_account
from ewskit import raw_message, seed
from exchangelib import Message
from support import EWS_PASSWORD, ews_settings

from migrator.batch import parse_server
from migrator.connectors.ews.changes import SYNC_PAGE_ENV
from migrator.connectors.ews.props import register_properties
from migrator.connectors.ews.source import EwsSource
from migrator.model import Credentials, MailboxJob
from migrator.secrets import Secret
from migrator.sources.base import IncrementalSource, SourceFolder
from migrator.syncstate import FolderState


@pytest.fixture
def source(
    ews: EwsServer, make_ews_mailbox: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, EwsSource]]:
    monkeypatch.setenv(SYNC_PAGE_ENV, "5")  # several pages for a few dozen changes
    smtp = make_ews_mailbox()  # type: ignore[operator]
    seed(ews, smtp)
    server = parse_server(f"http://127.0.0.1:{ews.port}", protocol="ews")
    job = MailboxJob(1, smtp, server, Credentials(smtp, Secret(EWS_PASSWORD)), None, "t@x.net")
    opened = EwsSource(job, ews_settings(None))
    yield smtp, opened
    opened.close()


def _inbox(source: EwsSource) -> SourceFolder:
    return next(f for f in source.list_folders() if f.path == ("INBOX",))


def test_an_ews_source_reads_only_what_changed_through_sync_folder_items(
    source: tuple[str, EwsSource], ews: EwsServer
) -> None:
    smtp, ews_source = source
    assert isinstance(ews_source, IncrementalSource)
    inbox = _inbox(ews_source)
    listed = {r.uid: r for r in ews_source.list_messages(inbox)}
    since = ews_source.listed_state(inbox.name)
    assert since is not None and since.sync and since.sync not in repr(since)
    assert FolderState.from_text(since.to_text()) == since
    assert ews_source.folder_state(inbox).uidvalidity == since.uidvalidity

    register_properties()
    account = ews_account(ews, smtp, password=EWS_PASSWORD)
    account.bulk_create(
        account.inbox,
        [Message(account=account, mime_content=raw_message(100 + n)) for n in range(7)],
    )
    box = ews.store[smtp]
    old = sorted(listed)
    read, flagged, gone = old[:4], old[4:6], old[6:9]
    with ews.store.lock:
        for uid in read:
            box.items[uid].is_read = not box.items[uid].is_read
        for uid in gone:
            del box.items[uid]
    for item in account.fetch(ids=[(u, None) for u in flagged]):
        item.migrator_flag_status = 2
        item.save(update_fields=["migrator_flag_status"])
    before = len(ews.calls)

    changes = ews_source.changes(inbox, since)

    calls = ews.calls[before:]
    assert changes is not None
    assert "FindItem" not in calls and calls.count("SyncFolderItems") >= 4  # paged by 5
    assert len(changes.new) == 7 and all(r.size > 0 and r.internaldate for r in changes.new)
    assert set(changes.flags) == set(read) | set(flagged)
    for uid in read:
        assert ("\\Seen" in changes.flags[uid]) != ("\\Seen" in listed[uid].flags)
    for uid in flagged:
        assert "\\Flagged" in changes.flags[uid]
    assert changes.vanished == frozenset(gone) and changes.present is None
    assert changes.state.sync and changes.state.sync != since.sync
    # Nothing since: nothing changed.
    again = ews_source.changes(inbox, changes.state)
    assert again is not None and (again.new, again.flags, again.vanished) == ([], {}, frozenset())
    ews.assert_no_violations()


def test_a_refused_sync_state_lists_the_folder_whole_and_says_which(
    source: tuple[str, EwsSource], ews: EwsServer, caplog: pytest.LogCaptureFixture
) -> None:
    smtp, ews_source = source
    inbox = _inbox(ews_source)
    ews_source.list_messages(inbox)
    since = ews_source.listed_state(inbox.name)
    assert since is not None and since.sync
    ews.store[smtp].sync_states.clear()  # as Exchange forgets an old SyncState

    with caplog.at_level(logging.WARNING):
        assert ews_source.changes(inbox, since) is None

    (line,) = [r.getMessage() for r in caplog.records if "SyncState" in r.getMessage()]
    assert repr(inbox.name) in line and since.sync not in line
    assert ews_source.changes(inbox, FolderState(since.uidvalidity, 0)) is None  # none kept
    ews.assert_no_violations()

"""changes.changes_together: every folder's changes read at once give what reading them one
folder at a time (older_changes, and the listing above the old UIDNEXT) gives, with
QRESYNC, with CONDSTORE alone and with neither, against a real Dovecot."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import pytest
from imapclient import IMAPClient
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.changes import changes_together, folder_state, older_changes
from migrator.connectors.imap.connection import fetch_all
from migrator.connectors.imap.listing import FIELDS_ITEM, LISTING_ITEMS
from migrator.errors import FolderRefused
from migrator.syncstate import FolderChanges, FolderState

FOLDERS = ("INBOX", "Données/Été", "Archive", "Quiet", "Empty")


def _message(n: int) -> bytes:
    return (
        f"From: a@example.test\r\nTo: b@example.test\r\nSubject: change {n}\r\n"
        f"Message-ID: <change-{n}@example.test>\r\n\r\nbody {n}\r\n"
    ).encode()


@pytest.fixture
def client(
    dovecot: DovecotServer, make_user: MakeUser, ssl_context: ssl.SSLContext
) -> Iterator[IMAPClient]:
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as session:
        session.normalise_times = False
        session.login(make_user(), DEFAULT_USER_PASSWORD)
        yield session


def _fill(client: IMAPClient, folder: str, first: int, count: int) -> None:
    if count:
        messages = [((), None, _message(n)) for n in range(first, first + count)]
        assert imapwire.multiappend(client, folder, iter(messages)) == "OK"


def _one_at_a_time(client: IMAPClient, name: str, since: FolderState, qresync: bool) -> object:
    """What reading the folder alone gives (ImapSource.changes, but for the refs)."""
    state = folder_state(client.select_folder(name, readonly=True))
    if state.uidvalidity != since.uidvalidity:
        return None
    listed = {}
    if state.uidnext > since.uidnext:
        got = fetch_all(client, LISTING_ITEMS, FIELDS_ITEM, uids=f"{since.uidnext}:*")
        listed = {uid: m for uid, m in got.items() if uid >= since.uidnext}
    changes = older_changes(client, state, since, [], qresync=qresync)
    return changes, listed


@pytest.mark.parametrize("mode", ["QRESYNC", "CONDSTORE", None])
def test_every_folder_at_once_reads_what_one_folder_at_a_time_reads(
    client: IMAPClient, mode: str | None
) -> None:
    if mode is not None:
        assert mode.encode() in client.enable(mode)
    for name in FOLDERS[1:]:
        client.create_folder(name)
    for at, name in enumerate(FOLDERS[:4]):
        _fill(client, name, at * 100, 6)
    since: dict[str, FolderState] = {}
    for name in FOLDERS:
        since[name] = folder_state(client.select_folder(name, readonly=True))
    # Between the passes: new mail, flags changed, messages expunged; Quiet untouched.
    for at, name in enumerate(FOLDERS[:3]):
        _fill(client, name, at * 100 + 50, at + 1)
        client.select_folder(name)
        client.add_flags([2, 3], [b"\\Seen", b"$Label1"])
        client.delete_messages([4])
        client.expunge()
    client.unselect_folder()
    qresync = mode == "QRESYNC"

    together = changes_together(
        client, [(name, since[name]) for name in FOLDERS], qresync=qresync, what="test"
    )

    for name, got in zip(FOLDERS, together, strict=True):
        assert not got.alone
        assert got.changes is not None
        alone = _one_at_a_time(client, name, since[name], qresync)
        assert (got.changes, got.listed) == alone, name
    inbox = together[0].changes
    assert isinstance(inbox, FolderChanges) and set(together[0].listed) == {7}
    if mode is not None:
        assert set(inbox.flags) == {"2", "3"}
    if qresync:
        assert inbox.vanished == frozenset({"4"})
    else:
        assert inbox.present == frozenset({"1", "2", "3", "5", "6"})


def test_a_folder_made_again_is_listed_whole_and_a_missing_one_refused(
    client: IMAPClient,
) -> None:
    client.create_folder("Again")
    _fill(client, "Again", 0, 3)
    before = folder_state(client.select_folder("Again", readonly=True))
    inbox = folder_state(client.select_folder("INBOX", readonly=True))
    client.unselect_folder()
    client.delete_folder("Again")
    client.create_folder("Again")

    (again, same) = changes_together(
        client, [("Again", before), ("INBOX", inbox)], qresync=False, what="test"
    )

    assert again.changes is None and same.changes == FolderChanges(inbox, present=frozenset())
    with pytest.raises(FolderRefused, match="'Nowhere': EXAMINE refused"):
        changes_together(client, [("Nowhere", inbox)], qresync=False, what="test")
    assert client.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0  # still in step

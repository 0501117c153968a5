"""The IMAP target's batches written together (TogetherTarget): every folder's MULTIAPPEND
of a batch in one round trip, and the next batch written before this one's answers are
read; and a copy at a distance that uses them, whole and once."""

from __future__ import annotations

import ssl

import pytest
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import Fill
from support import CopyMailbox, assert_copied_exactly, run_options

from migrator import copier
from migrator.connectors.imap.target import ImapTarget
from migrator.errors import MessageRefused
from migrator.foldermap import TargetFolder
from migrator.report import MailboxState
from migrator.targets.base import AppendItem, GrowingBatchTarget, TogetherTarget


def _item(folder: str, n: int, flags: tuple[str, ...] = ("\\Seen",)) -> AppendItem:
    message = f"From: a@example.test\r\nSubject: together {n}\r\n\r\nbody {n}\r\n".encode()
    return AppendItem(folder, message, flags, None)


def test_two_batches_in_flight_land_in_order_with_a_refused_run_named_alone(
    dovecot: DovecotServer, make_user: MakeUser, tls_files: TlsFiles
) -> None:
    options = run_options(dovecot, tls_files.ca_cert)
    user = make_user()
    target = ImapTarget(
        options.target.server, options.target.credentials(user), user, options.connect
    )
    try:
        assert isinstance(target, TogetherTarget)
        # Dovecot offers MULTIAPPEND: batches of 25, and of small messages up to 500.
        assert isinstance(target, GrowingBatchTarget)
        assert (target.batch_size, target.small_batch_size) == (25, 500)
        folder = target.open_folder(TargetFolder(None, ("Projects",)))
        first = [_item("INBOX", 1), _item("INBOX", 2), _item("Gone", 3), _item(folder, 4)]
        second = [_item(folder, 5), _item("INBOX", 6, ("\\Flagged",))]

        written = target.send_together(first)
        also = target.send_together(second)  # before the first one's answers are read
        outcomes = target.land_together(written)
        placed_first = target.placed()
        later = target.land_together(also)
        placed_second = target.placed()
    finally:
        target.close()

    # The run into a folder that is not there is refused alone, named message by message.
    assert outcomes[:2] == [None, None] and outcomes[3] is None
    assert isinstance(outcomes[2], MessageRefused)
    assert later == [None, None]
    assert [p.folder if p else None for p in placed_first] == ["INBOX", "INBOX", None, folder]
    assert [p.folder if p else None for p in placed_second] == [folder, "INBOX"]
    assert [p.id for p in placed_first if p] == ["1", "2", "1"]
    assert [p.id for p in placed_second if p] == ["2", "3"]


def test_a_large_mailbox_opens_its_extra_connections_while_it_is_listed(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "Large": at least two lanes' worth of windows (here of 30 messages).
    monkeypatch.setattr(copier, "GROUPING_WINDOW", 30)
    opened: list[int] = []
    real_opening = copier.Opening

    class Counted(real_opening):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object) -> None:
            opened.append(int(args[2]))  # type: ignore[call-overload]
            super().__init__(*args)

    monkeypatch.setattr(copier, "Opening", Counted)
    source, target = make_user(), make_user()
    sent = fill(source, {"INBOX": 150, "Sent Messages": 60, "Archive/2023": 40})
    status = copy_mailbox(
        source, target, connections_per_mailbox=3, max_connections_per_server=8,
        grouping_window=30,
    )  # fmt: skip

    assert opened == [2]
    assert status is not None and status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.copied_messages == len(sent)
    assert_copied_exactly(dovecot, sent, target, DEFAULT_USER_PASSWORD, ssl_context)

"""The copier's rules, with in-memory fakes of our own MailboxSource, MailboxTarget and
Progress (never of a library): refusals, quota refusals mid-batch, broken passes."""

from __future__ import annotations

import copy
import itertools
import threading
import weakref
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from migrator import sending
from migrator.copier import Checkpoint, CopyOptions, InFlight, copy_pass, migrate_mailbox
from migrator.errors import (
    ErrorCode,
    FolderRefused,
    LockLost,
    MessageRefused,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.events import EventKind
from migrator.foldermap import TargetFolder, default_folder_map
from migrator.logingate import hold_login
from migrator.plan import MessageRef
from migrator.recognition import (
    TargetCopy,
    content_key,
    epoch_seconds,
    message_digest,
    system_flags,
)
from migrator.report import MailboxResult, MailboxState
from migrator.sources.base import SourceFolder
from migrator.targets.base import AppendItem, Outcome, QuotaInfo

START = datetime(2024, 1, 1, tzinfo=UTC)


class MemorySource:
    """`count` messages, one a day, UID `n` on day `n`, dealt to `folders` in turn."""

    def __init__(self, count: int, size: int = 100, folders: Sequence[str] = ("INBOX",)) -> None:
        self.folders = folders
        self.refs = [
            MessageRef(
                folder=folders[uid % len(folders)],
                uidvalidity=1,
                uid=str(uid),
                size=size,
                internaldate=START + timedelta(days=uid),
                message_id=f"<{uid}@x>",
            )
            for uid in range(1, count + 1)
        ]

    def list_folders(self) -> list[SourceFolder]:
        return [SourceFolder(name, (name,)) for name in self.folders]

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        return [r for r in self.refs if r.folder == folder.name]

    def body(self, ref: MessageRef) -> bytes:
        return f"Message-ID: <{ref.uid}@x>\r\n\r\nmessage {ref.uid}".encode()

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            yield ref, self.body(ref)

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            body = self.body(ref)
            yield ref, body[: body.index(b"\r\n\r\n") + 4]

    def session(self) -> MemorySource | None:
        return None  # one connection, unless a test says otherwise

    def close(self) -> None:
        pass


class MemoryTarget:
    def __init__(
        self,
        batch_size: int = 3,
        refuse: frozenset[int] = frozenset(),
        full_after: int | None = None,
        break_after: int | None = None,
        quota: QuotaInfo | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.quota_info = quota or QuotaInfo(None, None)
        self.throttled_seconds = 0.0
        self.stored: list[AppendItem] = []
        self.refuse = refuse
        self.full_after = full_after
        self.break_after = break_after

    def open_folder(self, folder: TargetFolder) -> str:
        return folder.display()

    def index(self, name: str) -> list[TargetCopy]:
        return [
            TargetCopy(
                str(n),
                content_key(i.message, complete=True),
                system_flags(i.flags),
                epoch_seconds(i.internaldate),
            )
            for n, i in enumerate(self.stored)
            if i.folder == name
        ]

    def digests(self, name: str, copies: Sequence[TargetCopy]) -> dict[str, str]:
        return {c.id: message_digest(self.stored[int(c.id)].message) for c in copies}

    def quota(self) -> QuotaInfo:
        return self.quota_info

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for index, item in enumerate(items):
            if self.break_after is not None and len(self.stored) >= self.break_after:
                self.break_after = None  # the connection drops once, mid-batch
                raise TransientError("connection lost")
            if self.full_after is not None and len(self.stored) >= self.full_after:
                return outcomes + [QuotaExceeded("full")] * (len(items) - index)
            if item.message.decode().endswith(tuple(f" {uid}" for uid in self.refuse)):
                outcomes.append(MessageRefused(f"refused {item.message.decode()}"))
                continue
            self.stored.append(item)
            outcomes.append(None)
        return outcomes

    def session(self) -> MemoryTarget | None:
        return None

    def close(self) -> None:
        pass


class MemoryProgress:
    def __init__(self) -> None:
        self.done: dict[Checkpoint, str | None] = {}
        self.fenced = False  # True: another worker holds the mailbox now

    def checkpoints(self) -> dict[Checkpoint, str | None]:
        return dict(self.done)

    def planned(self, **counts: int) -> None:
        pass

    def folder(self, name: str) -> None:
        pass

    def fence(self) -> None:
        if self.fenced:
            raise LockLost("taken over")

    def copied(
        self, copies: Sequence[tuple[MessageRef, str | None]], placed: Sequence[str] = ()
    ) -> None:
        self.fence()
        self.done.update((r.ident, key) for r, key in copies)

    def recognised(
        self, copies: Sequence[tuple[MessageRef, str | None]], placed: Sequence[str] = ()
    ) -> None:
        self.done.update((r.ident, key) for r, key in copies)


def test_a_refused_message_is_skipped_named_and_the_rest_go_on() -> None:
    target = MemoryTarget(refuse=frozenset({4}))
    result = copy_pass(
        MemorySource(10), target, default_folder_map(), MemoryProgress(), CopyOptions()
    )
    assert result.state is MailboxState.DONE
    assert result.copied_messages == 9
    ((skipped),) = result.skipped
    assert (skipped.folder, skipped.uid) == ("INBOX", "4")
    assert "refused" in skipped.reason


def test_a_folder_the_target_refuses_is_skipped_named_and_the_other_folders_go_on() -> None:
    class TwoFolders(MemorySource):
        def __init__(self) -> None:
            super().__init__(6)
            self.refs = [r.replace(folder="dbox-Mails" if int(r.uid) % 2 else "INBOX")
                         for r in self.refs]  # fmt: skip

        def list_folders(self) -> list[SourceFolder]:
            return [SourceFolder("INBOX", ("INBOX",)), SourceFolder("dbox-Mails", ("dbox-Mails",))]

        def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
            return [r for r in self.refs if r.folder == folder.name]

    class RefusingTarget(MemoryTarget):
        def open_folder(self, folder: TargetFolder) -> str:
            if folder.subpath == ("dbox-Mails",):
                raise FolderRefused("target mailbox t, folder 'dbox-Mails': reserved name")
            return super().open_folder(folder)

    target = RefusingTarget()
    result = copy_pass(TwoFolders(), target, default_folder_map(), MemoryProgress(), CopyOptions())

    assert result.state is MailboxState.DONE
    assert (result.copied_messages, result.total_messages) == (3, 6)
    assert {i.folder for i in target.stored} == {"Inbox"}
    assert sorted((s.folder, s.uid) for s in result.skipped) == [
        ("dbox-Mails", u) for u in ("1", "3", "5")
    ]
    assert all("folder 'dbox-Mails': reserved name" in s.reason for s in result.skipped)
    assert result.error is not None and "3 messages skipped" in result.error


def test_a_quota_refusal_mid_batch_leaves_that_message_and_all_older() -> None:
    target = MemoryTarget(batch_size=4, full_after=5)
    result = copy_pass(
        MemorySource(10), target, default_folder_map(), MemoryProgress(), CopyOptions()
    )
    assert result.state is MailboxState.QUOTA_STOPPED
    assert _uids(target.stored) == list(range(10, 5, -1))
    assert (result.copied_messages, result.left_messages) == (5, 5)


def test_a_pass_broken_mid_batch_is_resumed_without_duplicates() -> None:
    source, target, progress = MemorySource(10), MemoryTarget(break_after=4), MemoryProgress()
    result = migrate_mailbox(
        lambda: source,
        lambda: target,
        default_folder_map(),
        progress,
        CopyOptions(max_wait=0.01, late_commit_grace=0),
    )
    assert result.state is MailboxState.DONE
    # The broken batch stored one message whose checkpoint never came: recognised.
    assert sorted(_uids(target.stored)) == list(range(1, 11))
    assert len(progress.done) == 10


class Refs(list[MessageRef]):
    """A listing that can be watched (a plain list takes no weak reference)."""


class WatchedSource(MemorySource):
    """Each listing a new Refs, watched: `alive_at_relisting` says, at each listing, how
    many earlier listings were still held."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.listings: list[weakref.ref[Refs]] = []
        self.alive_at_relisting: list[int] = []

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        self.alive_at_relisting.append(sum(1 for r in self.listings if r() is not None))
        listed = Refs(super().list_messages(folder))
        self.listings.append(weakref.ref(listed))
        return listed


def test_a_failed_pass_lets_its_listing_go_before_the_next_lists_again() -> None:
    """Two listings of a million messages do not fit in what one pass may take."""
    source, target = WatchedSource(10), MemoryTarget(break_after=4)
    result = migrate_mailbox(
        lambda: source,
        lambda: target,
        default_folder_map(),
        MemoryProgress(),
        CopyOptions(max_wait=0.01, late_commit_grace=0),
    )
    assert result.state is MailboxState.DONE
    assert source.alive_at_relisting == [0, 0]


def test_each_pass_and_each_reconnect_is_told_to_the_event_log() -> None:
    told: list[tuple[EventKind, str]] = []

    class Told:
        def note(self, kind: EventKind, text: str, **data: object) -> None:
            told.append((kind, text))

    target = MemoryTarget(break_after=4)
    result = migrate_mailbox(
        lambda: MemorySource(10),
        lambda: target,
        default_folder_map(),
        MemoryProgress(),
        CopyOptions(max_wait=0.01, late_commit_grace=0),
        events=Told(),
    )
    assert result.state is MailboxState.DONE
    assert [kind for kind, _ in told] == [EventKind.PASS, EventKind.RECONNECT, EventKind.PASS]
    assert told[1][1].startswith("pass 1 ended: ") and told[2][1] == "pass 2"


def test_transient_errors_beyond_the_cap_fail_the_mailbox_with_the_reason() -> None:
    class AlwaysBroken(MemoryTarget):
        def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
            raise TransientError("server went away")

    result = migrate_mailbox(
        lambda: MemorySource(3),
        lambda: AlwaysBroken(),
        default_folder_map(),
        MemoryProgress(),
        CopyOptions(max_passes=2, max_wait=0.01, late_commit_grace=0),
    )
    assert result.state is MailboxState.FAILED
    assert result.error == "server went away"


def test_appends_left_in_flight_are_waited_for_once_and_only_what_is_left_of_the_grace() -> None:
    in_flight, slept = InFlight(), list[float]()
    in_flight.settle(5.0, slept.append)
    assert slept == []  # nothing was in flight: no wait

    in_flight.lost({"INBOX", "Archive"})
    in_flight.settle(5.0, slept.append)
    ((waited,),) = [slept]
    assert 4.5 < waited <= 5.0

    in_flight.settle(5.0, slept.append)
    assert slept == [waited]  # settled: the pass after that does not wait again


def _uids(items: Sequence[AppendItem]) -> list[int]:
    return [int(i.message.split()[-1]) for i in items]


def _runs(items: Sequence[AppendItem]) -> int:
    return 1 + sum(a.folder != b.folder for a, b in itertools.pairwise(items))


FOLDERS = ("INBOX", "Sent", "Archive")


def test_a_target_without_limit_gets_each_folder_together() -> None:
    target = MemoryTarget(batch_size=6, quota=QuotaInfo(None, None, unlimited=True))
    copy_pass(
        MemorySource(12, folders=FOLDERS), target, default_folder_map(), MemoryProgress(),
        CopyOptions(),
    )  # fmt: skip
    # Newest first would be 12 (INBOX), 11 (Archive), 10 (Sent), 9 (INBOX), ...: twelve
    # runs of one message.  Grouped: one run per folder, each newest first.
    assert _uids(target.stored) == [12, 9, 6, 3, 11, 8, 5, 2, 10, 7, 4, 1]
    assert _runs(target.stored) == 3


class GrowingTarget(MemoryTarget):
    """A target whose batches of small messages may grow (GrowingBatchTarget), and which
    writes a batch before the last one's answers are read (TogetherTarget); it keeps
    each batch it was given."""

    small_batch_size = 10
    small_batch_bytes = 1000

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.batches: list[list[AppendItem]] = []

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        self.batches.append(list(items))
        return super().append_batch(items)

    def send_together(self, items: Sequence[AppendItem]) -> list[Outcome]:
        return self.append_batch(items)

    def land_together(self, sent: list[Outcome]) -> list[Outcome]:
        return sent


@pytest.mark.parametrize(
    ("size", "quota", "batches"),
    [
        # 100-byte messages: three hold 300 bytes, so a batch grows to ten (1,000 bytes).
        (100, QuotaInfo(None, None, unlimited=True), [10, 10, 4]),
        (100, QuotaInfo(None, None), [10, 10, 4]),
        # 400-byte messages: three hold 1,200 bytes, so a batch stays at three.
        (400, QuotaInfo(None, None, unlimited=True), [3] * 8),
    ],
)
def test_a_target_whose_commands_cost_more_than_messages_gets_small_ones_in_larger_batches(
    size: int, quota: QuotaInfo, batches: list[int]
) -> None:
    target = GrowingTarget(batch_size=3, quota=quota)
    result = copy_pass(
        MemorySource(24, size=size, folders=FOLDERS), target, default_folder_map(),
        MemoryProgress(), CopyOptions(grouping_window=4),
    )  # fmt: skip

    assert (result.state, result.copied_messages) == (MailboxState.DONE, 24)
    assert [len(batch) for batch in target.batches] == batches
    assert sorted(_uids(target.stored)) == list(range(1, 25))


def test_a_batch_does_not_wait_for_a_slow_source_to_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every message comes later than the batch waits for the next (GATHER_SECONDS).
    monkeypatch.setattr(sending, "GATHER_SECONDS", 0.0)
    target = GrowingTarget(batch_size=3, quota=QuotaInfo(None, None, unlimited=True))
    copy_pass(
        MemorySource(24, folders=FOLDERS), target, default_folder_map(), MemoryProgress(),
        CopyOptions(grouping_window=4),
    )  # fmt: skip

    assert [len(batch) for batch in target.batches] == [3] * 8


def test_within_the_quotas_room_a_batch_goes_one_folder_after_another() -> None:
    target = GrowingTarget(batch_size=3, quota=QuotaInfo(None, None, unlimited=True))
    copy_pass(
        MemorySource(24, folders=FOLDERS), target, default_folder_map(), MemoryProgress(),
        CopyOptions(grouping_window=4),
    )  # fmt: skip

    # Windows of four, each grouped by folder, still leave a batch of ten with runs of
    # one or two messages; the batch is written one folder after another, each folder's
    # messages newest first, the folders in the order of their newest message.
    first = target.batches[0]
    assert _runs(first) == 3
    assert _uids(first) == [24, 21, 18, 23, 20, 17, 22, 19, 16, 13]


def test_a_target_that_cannot_tell_its_quota_gets_the_exact_newest_first_order() -> None:
    target = MemoryTarget(batch_size=6, full_after=7)  # it is full after 7, and never said so
    result = copy_pass(
        MemorySource(12, folders=FOLDERS), target, default_folder_map(), MemoryProgress(),
        CopyOptions(),
    )  # fmt: skip
    assert _uids(target.stored) == [12, 11, 10, 9, 8, 7, 6]
    assert (result.state, result.left_messages) == (MailboxState.QUOTA_STOPPED, 5)


def test_near_a_known_limit_the_order_is_exact_so_the_stop_keeps_the_newest() -> None:
    size = 200_000
    # Room for 10 of 12; the last 1 MiB of it (a margin for the server's own counting)
    # is sent in the exact order, so what the target holds is exactly the newest ten.
    target = MemoryTarget(batch_size=6, quota=QuotaInfo(limit=10 * size + 1000, usage=0))
    result = copy_pass(
        MemorySource(12, size, folders=FOLDERS), target, default_folder_map(), MemoryProgress(),
        CopyOptions(grouping_window=4),
    )  # fmt: skip
    #                              grouped  | exact
    assert _uids(target.stored) == [12, 9, 11, 10, 8, 7, 6, 5, 4, 3]
    assert (result.state, result.copied_messages, result.left_messages) == (
        MailboxState.QUOTA_STOPPED, 10, 2,
    )  # fmt: skip


# -- several connections per mailbox -------------------------------------------------------


class SharedSource(MemorySource):
    """A source that allows more connections: each `session` reads the same mail."""

    def __init__(self, count: int, size: int = 100, folders: Sequence[str] = FOLDERS) -> None:
        super().__init__(count, size, folders)
        self.opened = [self]

    def session(self) -> SharedSource:
        other = copy.copy(self)
        self.opened.append(other)
        return other


class SharedTarget(MemoryTarget):
    """A target that allows more connections, all storing into one mailbox; each
    connection keeps what it was sent, and whether it was closed."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.connections: list[SharedTarget] = [self]
        self.sent: list[AppendItem] = []
        self.closed = False
        self._lock = threading.Lock()

    def session(self) -> SharedTarget:
        other = copy.copy(self)  # the same stored list, lock and connection list
        other.sent, other.closed = [], False
        with self._lock:
            self.connections.append(other)
        return other

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        with self._lock:
            self.sent.extend(items)
            return super().append_batch(items)

    def close(self) -> None:
        self.closed = True


class Slots:
    def __init__(self, free: int) -> None:
        self.free, self.asked, self.given_back = free, list[int](), 0

    def take(self, wanted: int) -> int:
        self.asked.append(wanted)
        return min(wanted, self.free)

    def give_back(self) -> None:
        self.given_back += 1


def _lane_pass(
    source: MemorySource,
    target: MemoryTarget,
    slots: Slots | None = None,
    connections: int = 4,
    **options: int,
) -> tuple[MailboxResult, MemoryProgress]:
    progress = MemoryProgress()
    result = copy_pass(
        source, target, default_folder_map(), progress,
        CopyOptions(connections=connections, **options), slots=slots,  # type: ignore[arg-type]
    )  # fmt: skip
    return result, progress


def test_a_mailbox_goes_over_several_connections_and_each_message_once() -> None:
    source = SharedSource(1200)  # twelve windows of 100: three for each connection
    target = SharedTarget(batch_size=25, quota=QuotaInfo(None, None, unlimited=True))
    result, progress = _lane_pass(source, target)

    assert (result.state, result.copied_messages) == (MailboxState.DONE, 1200)
    assert sorted(_uids(target.stored)) == list(range(1, 1201))
    assert len(progress.done) == 1200
    assert len(source.opened) == len(target.connections) == 4
    assert all(connection.sent for connection in target.connections)
    assert all(connection.closed for connection in target.connections[1:])
    # Each connection goes newest first through the windows it was dealt.
    for connection in target.connections:
        firsts = [_uids(connection.sent[i : i + 100])[0] for i in range(0, 200, 100)]
        assert firsts == sorted(firsts, reverse=True)


def test_where_an_adapter_allows_one_connection_the_copy_uses_one() -> None:
    target = SharedTarget(batch_size=25, quota=QuotaInfo(None, None, unlimited=True))
    result, _ = _lane_pass(MemorySource(1000, folders=FOLDERS), target)  # as POP3: no session
    assert (result.state, result.copied_messages) == (MailboxState.DONE, 1000)
    assert len(target.connections) == 1


def test_extra_connections_take_free_slots_only_and_give_them_back() -> None:
    source, slots = SharedSource(1200), Slots(free=1)
    target = SharedTarget(batch_size=25, quota=QuotaInfo(None, None, unlimited=True))
    result, _ = _lane_pass(source, target, slots)
    assert (result.state, result.copied_messages) == (MailboxState.DONE, 1200)
    assert slots.asked == [3]  # four connections wanted, one of them held already
    assert len(target.connections) == 2 and slots.given_back == 1

    small = SharedTarget(batch_size=25, quota=QuotaInfo(None, None, unlimited=True))
    _lane_pass(SharedSource(500), small, slots)  # too few windows for two: no slot asked
    assert slots.asked == [3] and len(small.connections) == 1


def test_a_connection_broken_mid_pass_is_resumed_without_duplicates_or_loss() -> None:
    stored: list[AppendItem] = []
    targets: list[SharedTarget] = []

    def open_target() -> SharedTarget:
        # Every pass's connections store into one mailbox; the first pass breaks once
        # its connections have stored 430 messages between them.
        target = SharedTarget(
            batch_size=25, quota=QuotaInfo(None, None, unlimited=True),
            break_after=None if targets else 430,
        )  # fmt: skip
        target.stored = stored
        targets.append(target)
        return target

    progress = MemoryProgress()
    result = migrate_mailbox(
        lambda: SharedSource(1000),
        open_target,
        default_folder_map(),
        progress,
        CopyOptions(max_wait=0.01, late_commit_grace=0, connections=4),
    )
    assert result.state is MailboxState.DONE
    assert len(targets) == 2  # two passes
    assert sorted(_uids(stored)) == list(range(1, 1001))
    assert len(progress.done) == 1000


def test_a_quota_stop_on_one_connection_stops_them_all_and_counts_the_rest_as_left() -> None:
    # The target said it had no limit, then refused at 250 (someone else's mail came in).
    target = SharedTarget(
        batch_size=25, quota=QuotaInfo(None, None, unlimited=True), full_after=250
    )
    result, progress = _lane_pass(SharedSource(1000), target)
    assert result.state is MailboxState.QUOTA_STOPPED
    assert len(target.stored) == result.copied_messages == len(progress.done) == 250
    assert len(set(_uids(target.stored))) == 250
    assert result.copied_messages + result.left_messages == 1000


def test_near_a_known_limit_only_what_certainly_fits_goes_side_by_side() -> None:
    size = 100_000  # 50 messages (5 MB) a window
    # 60 MB of room: the 600 newest fit; 54 MB certainly (a tenth kept for the server's
    # own counting), so ten windows go side by side and the last two, alone, in order.
    target = SharedTarget(batch_size=25, quota=QuotaInfo(limit=600 * size, usage=0))
    result, _ = _lane_pass(SharedSource(1000, size), target, grouping_window=50)
    assert (result.state, result.copied_messages, result.left_messages) == (
        MailboxState.QUOTA_STOPPED, 600, 400,
    )  # fmt: skip
    assert sorted(_uids(target.stored)) == list(range(401, 1001))  # the newest 600
    assert _uids(target.stored[500:]) == list(range(500, 400, -1))  # the tail, exactly


def test_a_server_that_refuses_one_more_connection_gets_the_copy_over_those_it_took() -> None:
    opening = threading.Lock()  # the extra connections are opened side by side

    class Limited(SharedTarget):
        def session(self) -> SharedTarget:
            with opening:
                if len(self.connections) >= 2:  # as Dovecot's mail_max_userip_connections
                    raise TransientError("Maximum number of connections from user+IP exceeded")
                return super().session()

    source = SharedSource(1200)
    target = Limited(batch_size=25, quota=QuotaInfo(None, None, unlimited=True))
    result, _ = _lane_pass(source, target)
    assert (result.state, result.copied_messages) == (MailboxState.DONE, 1200)
    assert sorted(_uids(target.stored)) == list(range(1, 1201))
    assert len(target.connections) == 2
    # The three extra source connections were opened side by side; the two whose target
    # connection the server refused were let go.
    assert len(source.opened) == 4


def test_a_gated_source_is_connected_while_the_target_opens_and_logs_in_after_it() -> None:
    # The source connects (here: reaches the gate) while the target is being opened; the
    # target waits for that, so the test ends only if both really go side by side.
    source_at_gate, steps = threading.Event(), list[str]()
    source, target = MemorySource(3), MemoryTarget()

    def open_source() -> MemorySource:
        source_at_gate.set()
        hold_login()
        steps.append("source login")
        return source

    def open_target() -> MemoryTarget:
        assert source_at_gate.wait(timeout=30), "the source was not connected meanwhile"
        steps.append("target open")
        return target

    result = migrate_mailbox(
        open_source, open_target, default_folder_map(), MemoryProgress(), CopyOptions(),
        gated_source=True,
    )  # fmt: skip
    assert result.state is MailboxState.DONE
    assert steps == ["target open", "source login"]
    assert sorted(_uids(target.stored)) == [1, 2, 3]


def test_a_gated_source_whose_target_cannot_be_opened_never_logs_in() -> None:
    logged_in = threading.Event()

    def open_source() -> MemorySource:
        hold_login()
        logged_in.set()
        return MemorySource(3)

    def open_target() -> MemoryTarget:
        raise PermanentError("target mailbox x: login refused", code=ErrorCode.AUTHENTICATIONFAILED)

    result = migrate_mailbox(
        open_source, open_target, default_folder_map(), MemoryProgress(), CopyOptions(),
        gated_source=True,
    )  # fmt: skip
    assert result.state is MailboxState.NOT_READY
    assert result.error == "target mailbox x: login refused"
    assert not logged_in.is_set()


def test_a_login_held_outside_a_gated_opening_goes_at_once() -> None:
    hold_login()  # another thread's gate, or none: nothing to wait for

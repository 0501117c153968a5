"""The copier's rules, with in-memory fakes of our own MailboxSource, MailboxTarget and
Progress (never of a library): refusals, quota refusals mid-batch, broken passes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta

from migrator.copier import Checkpoint, CopyOptions, copy_pass, migrate_mailbox
from migrator.errors import MessageRefused, QuotaExceeded, TransientError
from migrator.foldermap import TargetFolder, default_folder_map
from migrator.plan import MessageKey, MessageRef
from migrator.report import MailboxState
from migrator.sources.base import SourceFolder
from migrator.targets.base import AppendItem, Outcome, QuotaInfo

START = datetime(2024, 1, 1, tzinfo=UTC)


class MemorySource:
    def __init__(self, count: int, size: int = 100) -> None:
        self.refs = [
            MessageRef(
                folder="INBOX",
                uidvalidity=1,
                uid=uid,
                size=size,
                internaldate=START + timedelta(days=uid),
                key=("mid", f"<{uid}@x>", size),
            )
            for uid in range(1, count + 1)
        ]

    def list_folders(self) -> list[SourceFolder]:
        return [SourceFolder("INBOX", ("INBOX",))]

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        return list(self.refs)

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref in refs:
            yield ref, f"message {ref.uid}".encode()

    def headers(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        return iter(())

    def close(self) -> None:
        pass


class MemoryTarget:
    def __init__(
        self,
        batch_size: int = 3,
        refuse: frozenset[int] = frozenset(),
        full_after: int | None = None,
        break_after: int | None = None,
    ) -> None:
        self.batch_size = batch_size
        self.throttled_seconds = 0.0
        self.stored: list[AppendItem] = []
        self.refuse = refuse
        self.full_after = full_after
        self.break_after = break_after

    def open_folder(self, folder: TargetFolder) -> str:
        return folder.display()

    def index(self, name: str) -> Counter[MessageKey]:
        return Counter(i.key for i in self.stored if i.folder == name and i.key)

    def quota(self) -> QuotaInfo:
        return QuotaInfo(None, None)

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

    def close(self) -> None:
        pass


class MemoryProgress:
    def __init__(self) -> None:
        self.done: set[Checkpoint] = set()

    def checkpoints(self) -> frozenset[Checkpoint]:
        return frozenset(self.done)

    def planned(self, **counts: int) -> None:
        pass

    def folder(self, name: str) -> None:
        pass

    def copied(self, refs: Sequence[MessageRef]) -> None:
        self.done.update((r.folder, r.uidvalidity, r.uid) for r in refs)

    def recognised(self, refs: list[MessageRef]) -> None:
        self.done.update((r.folder, r.uidvalidity, r.uid) for r in refs)


def test_a_refused_message_is_skipped_named_and_the_rest_go_on() -> None:
    target = MemoryTarget(refuse=frozenset({4}))
    result = copy_pass(
        MemorySource(10), target, default_folder_map(), MemoryProgress(), CopyOptions()
    )
    assert result.state is MailboxState.DONE
    assert result.copied_messages == 9
    ((skipped),) = result.skipped
    assert (skipped.folder, skipped.uid) == ("INBOX", 4)
    assert "refused" in skipped.reason


def test_a_quota_refusal_mid_batch_leaves_that_message_and_all_older() -> None:
    target = MemoryTarget(batch_size=4, full_after=5)
    result = copy_pass(
        MemorySource(10), target, default_folder_map(), MemoryProgress(), CopyOptions()
    )
    assert result.state is MailboxState.QUOTA_STOPPED
    assert [i.message for i in target.stored] == [f"message {u}".encode() for u in range(10, 5, -1)]
    assert (result.copied_messages, result.left_messages) == (5, 5)


def test_a_pass_broken_mid_batch_is_resumed_without_duplicates() -> None:
    source, target, progress = MemorySource(10), MemoryTarget(break_after=4), MemoryProgress()
    result = migrate_mailbox(
        lambda: source,
        lambda: target,
        default_folder_map(),
        progress,
        CopyOptions(max_wait=0.01),
    )
    assert result.state is MailboxState.DONE
    # The broken batch stored one message whose checkpoint never came: recognised.
    assert sorted(i.message for i in target.stored) == sorted(
        f"message {u}".encode() for u in range(1, 11)
    )
    assert len(progress.done) == 10


def test_transient_errors_beyond_the_cap_fail_the_mailbox_with_the_reason() -> None:
    class AlwaysBroken(MemoryTarget):
        def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
            raise TransientError("server went away")

    result = migrate_mailbox(
        lambda: MemorySource(3),
        lambda: AlwaysBroken(),
        default_folder_map(),
        MemoryProgress(),
        CopyOptions(max_passes=2, max_wait=0.01),
    )
    assert result.state is MailboxState.FAILED
    assert result.error == "server went away"

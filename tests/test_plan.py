"""The copy plan: newest first across the mailbox, date range, quota budget, resume."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest

from migrator.plan import (
    MessageRef,
    fetch_windows,
    make_plan,
    message_key,
    newest_first,
    quota_budget,
    take_within_budget,
    within_range,
)

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def ref(folder: str, uid: int, day: str | None, size: int = 100, **kw: object) -> MessageRef:
    when = datetime.fromisoformat(day).replace(tzinfo=UTC) if day else None
    key = kw.pop("key", ("mid", f"<{folder}.{uid}@x>", size))
    return MessageRef(
        folder=folder,
        uidvalidity=1,
        uid=uid,
        size=size,
        internaldate=when,
        key=key,
        **kw,  # type: ignore[arg-type]
    )


def test_newest_first_interleaves_folders_by_date() -> None:
    refs = [
        ref("INBOX", 1, "2020-01-01"),
        ref("Sent", 1, "2021-06-01"),
        ref("INBOX", 2, "2022-01-01"),
        ref("Sent", 2, "2019-01-01"),
    ]
    ordered = newest_first(refs, NOW)
    assert [(r.folder, r.uid) for r in ordered] == [
        ("INBOX", 2),
        ("Sent", 1),
        ("INBOX", 1),
        ("Sent", 2),
    ]


@pytest.mark.parametrize(
    ("internaldate", "date_header", "expected"),
    [
        ("2020-05-05", "2001-01-01", "2020-05-05"),  # INTERNALDATE wins when sane
        (None, "2001-01-01", "2001-01-01"),  # missing: the Date header
        ("1970-01-01", "2001-01-01", "2001-01-01"),  # a clock reset to the epoch is absurd
        ("2099-01-01", "2001-01-01", "2001-01-01"),  # so is the far future
        ("1970-01-01", None, "1970-01-01"),  # nothing better: keep what there is
    ],
)
def test_effective_date_falls_back_to_date_header(
    internaldate: str | None, date_header: str | None, expected: str
) -> None:
    header = datetime.fromisoformat(date_header).replace(tzinfo=UTC) if date_header else None
    message = ref("INBOX", 1, internaldate, date_header=header)
    assert message.effective_date(NOW).date().isoformat() == expected


@pytest.mark.parametrize(
    ("since", "until", "day", "inside"),
    [
        (None, None, "2000-01-01", True),
        ("2020-01-01", None, "2020-01-01", True),  # since is inclusive
        ("2020-01-01", None, "2019-12-31", False),
        (None, "2020-01-01", "2020-01-01", False),  # until is exclusive
        (None, "2020-01-01", "2019-12-31", True),
    ],
)
def test_date_range(since: str | None, until: str | None, day: str, inside: bool) -> None:
    def d(text: str | None) -> datetime | None:
        return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None

    assert within_range(ref("INBOX", 1, day), NOW, d(since), d(until)) is inside


@pytest.mark.parametrize(
    ("server_limit", "usage", "activation", "expected"),
    [
        (None, 0, None, None),
        (1000, 200, None, 800),
        (None, 200, 500, 300),
        (1000, 200, 500, 300),  # the smaller room wins
        (1000, 1500, None, 0),  # already over: nothing more
    ],
)
def test_quota_budget(
    server_limit: int | None, usage: int, activation: int | None, expected: int | None
) -> None:
    assert (
        quota_budget(server_limit=server_limit, server_usage=usage, activation_limit=activation)
        == expected
    )


def test_budget_stops_at_first_message_that_does_not_fit() -> None:
    ordered = [ref("INBOX", 3, "2022-01-01", 400), ref("INBOX", 2, "2021-01-01", 500),
               ref("INBOX", 1, "2020-01-01", 100)]  # fmt: skip
    split = take_within_budget(ordered, 850)
    # The 100-byte oldest message would fit, but taking it would leave a gap.
    assert [r.uid for r in split.fits] == [3]
    assert [r.uid for r in split.left] == [2, 1]
    assert split.left_bytes == 600


def test_no_budget_takes_everything() -> None:
    ordered = [ref("INBOX", 1, "2020-01-01")]
    assert take_within_budget(ordered, None).fits == tuple(ordered)


def _plan(
    refs: list[MessageRef], checkpointed: set[tuple[str, int, int]], present: Counter
) -> object:  # type: ignore[type-arg]
    return make_plan(
        refs,
        now=NOW,
        since=None,
        until=None,
        checkpointed=frozenset(checkpointed),
        present_at_target={"T": present},
        target_of={r.folder: "T" for r in refs},
    )


def test_checkpointed_messages_are_not_copied_again() -> None:
    refs = [ref("INBOX", 1, "2020-01-01"), ref("INBOX", 2, "2021-01-01")]
    plan = _plan(refs, {("INBOX", 1, 1)}, Counter({refs[0].key: 1}))
    assert [r.uid for r in plan.to_copy] == [2]


def test_message_at_target_without_checkpoint_is_recognised() -> None:
    # Appended, then the worker died before the checkpoint was written.
    refs = [ref("INBOX", 1, "2020-01-01"), ref("INBOX", 2, "2021-01-01")]
    plan = _plan(refs, set(), Counter({refs[1].key: 1}))
    assert [r.uid for r in plan.to_copy] == [1]
    assert [r.uid for r in plan.already_done] == [2]


def test_identical_source_messages_stay_two_messages() -> None:
    same = ("mid", "<dup@x>", 100)
    refs = [ref("INBOX", 1, "2020-01-01", key=same), ref("INBOX", 2, "2020-01-01", key=same)]
    # One copy landed and was checkpointed: the twin must still be copied.
    plan = _plan(refs, {("INBOX", 1, 1)}, Counter({same: 1}))
    assert [r.uid for r in plan.to_copy] == [2]
    # Redis lost: one copy at the target stands for one source message only.
    plan = _plan(refs, set(), Counter({same: 1}))
    assert len(plan.to_copy) == 1 and len(plan.already_done) == 1


def test_message_key_uses_message_id_else_header_hash() -> None:
    assert message_key(" <a@b> ", 10, None) == ("mid", "<a@b>", 10)
    one = message_key(None, 10, b"Subject: a\r\n\r\n")
    two = message_key(None, 10, b"Subject: b\r\n\r\n")
    assert one[0] == "hdr" and one != two


@pytest.mark.parametrize(
    ("sizes", "max_count", "windows"),
    [
        ([10, 10, 10], 10, [3]),  # all fit in one round trip
        ([10] * 5, 2, [2, 2, 1]),  # at most two messages each
        ([60, 50, 10], 10, [1, 2]),  # at most 100 bytes each
        ([500, 10], 10, [1, 1]),  # a message over the cap still goes, alone
        ([], 10, []),
    ],
)
def test_fetch_windows_cap_count_and_bytes(
    sizes: list[int], max_count: int, windows: list[int]
) -> None:
    refs = [ref("INBOX", i, "2020-01-01", size) for i, size in enumerate(sizes, start=1)]
    got = list(fetch_windows(refs, max_count, 100))
    assert [len(w) for w in got] == windows
    assert [r for w in got for r in w] == refs

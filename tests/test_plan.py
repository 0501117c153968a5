"""The copy plan: newest first across the mailbox, date range, quota budget, resume."""

from __future__ import annotations

import copy
import pickle
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime

import pytest

from migrator.plan import (
    LaneSplit,
    MessageRef,
    fetch_windows,
    lane_split,
    make_plan,
    newest_first,
    quota_budget,
    reorderable_bytes,
    send_order,
    take_within_budget,
    window_full,
    within_range,
)

NOW = datetime(2026, 11, 28, tzinfo=UTC)


def ref(folder: str, uid: int, day: str | None, size: int = 100, **kw: object) -> MessageRef:
    when = datetime.fromisoformat(day).replace(tzinfo=UTC) if day else None
    return MessageRef(
        folder=folder,
        uidvalidity=1,
        uid=str(uid),
        size=size,
        internaldate=when,
        message_id=f"<{folder}.{uid}@x>",
        **kw,  # type: ignore[arg-type]
    )


def test_a_ref_listed_with_a_numeric_uid_is_the_same_value_as_one_with_its_text() -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    listed = MessageRef("INBOX", 7, 4242, 100, when)  # as the IMAP listing makes it
    told = MessageRef("INBOX", 7, "4242", 100, when)
    assert listed.uid == "4242"
    assert listed.ident == ("INBOX", 7, "4242")
    assert listed == told and hash(listed) == hash(told)
    assert listed != MessageRef("INBOX", 7, "04242", 100, when)  # text stays text
    assert listed != told.replace(size=101)


def test_a_ref_keeps_the_fields_most_messages_leave_empty() -> None:
    when = datetime(2024, 5, 1, tzinfo=UTC)
    bare = MessageRef("INBOX", 7, "1", 100, None)
    assert (bare.date_header, bare.message_id, bare.received, bare.place) == (None,) * 4
    full = bare.replace(date_header=when, message_id="<m@x>", received=when, place="Sent")
    assert (full.date_header, full.message_id, full.received, full.place) == (
        when, "<m@x>", when, "Sent",
    )  # fmt: skip
    assert full.placed == "Sent" and bare.placed == "INBOX"
    assert full != bare
    assert "message_id='<m@x>'" in repr(full)


def test_a_ref_is_immutable_and_replace_names_only_its_fields() -> None:
    ref = MessageRef("INBOX", 7, "1", 100, None)
    with pytest.raises(FrozenInstanceError):
        ref.size = 5  # type: ignore[misc]
    with pytest.raises(TypeError, match="colour"):
        ref.replace(colour="red")
    assert ref.replace(folder="Sent").ident == ("Sent", 7, "1")


def test_a_ref_copies_and_pickles_as_the_same_value() -> None:
    listed = MessageRef("INBOX", 7, 42, 100, None, message_id="<m@x>", place="Sent")
    for twin in (copy.copy(listed), copy.deepcopy(listed), pickle.loads(pickle.dumps(listed))):  # noqa: S301
        assert twin == listed and twin.uid == "42" and twin.place == "Sent"


def test_newest_first_interleaves_folders_by_date() -> None:
    refs = [
        ref("INBOX", 1, "2020-01-01"),
        ref("Sent", 1, "2021-06-01"),
        ref("INBOX", 2, "2022-01-01"),
        ref("Sent", 2, "2019-01-01"),
    ]
    ordered = newest_first(refs, NOW)
    assert [(r.folder, r.uid) for r in ordered] == [
        ("INBOX", "2"),
        ("Sent", "1"),
        ("INBOX", "1"),
        ("Sent", "2"),
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


def _day(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text).replace(tzinfo=UTC) if text else None


@pytest.mark.parametrize(
    ("internaldate", "received", "date_header", "order_by", "copy_gets"),
    [
        # IMAP: INTERNALDATE when sane; the copy keeps the source's own, absurd or not.
        ("2020-05-05", "2019-01-01", "2001-01-01", "2020-05-05", "2020-05-05"),
        ("1970-01-01", "2019-01-01", "2001-01-01", "2019-01-01", "1970-01-01"),
        # POP3 (no INTERNALDATE): the newest Received, then the Date field, sane ones first.
        (None, "2019-01-01", "2001-01-01", "2019-01-01", "2019-01-01"),
        (None, None, "2001-01-01", "2001-01-01", "2001-01-01"),
        (None, "2099-01-01", "2001-01-01", "2001-01-01", "2001-01-01"),  # absurd Received
        (None, "2019-01-01", "2099-01-01", "2019-01-01", "2019-01-01"),  # absurd Date
        (None, "1975-01-01", "2099-01-01", "1975-01-01", "1975-01-01"),  # nothing sane
        (None, None, None, "1970-01-01", None),  # nothing at all: the server's own time
    ],
)
def test_the_newest_received_date_stands_in_for_a_missing_or_absurd_arrival_time(
    internaldate: str | None,
    received: str | None,
    date_header: str | None,
    order_by: str,
    copy_gets: str | None,
) -> None:
    message = MessageRef(
        "INBOX", 1, "1", 10, _day(internaldate),
        date_header=_day(date_header), received=_day(received),
    )  # fmt: skip
    assert message.effective_date(NOW).date().isoformat() == order_by
    given = message.append_date(NOW)
    assert (given.date().isoformat() if given else None) == copy_gets


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
    assert [r.uid for r in split.fits] == ["3"]
    assert [r.uid for r in split.left] == ["2", "1"]
    assert split.left_bytes == 600


def test_no_budget_takes_everything() -> None:
    ordered = [ref("INBOX", 1, "2020-01-01")]
    assert take_within_budget(ordered, None).fits == tuple(ordered)


def test_messages_known_done_are_not_copied_again() -> None:
    # Done: checkpointed, or recognised at the target by content (migrator.recognition).
    refs = [ref("INBOX", 1, "2020-01-01"), ref("INBOX", 2, "2021-01-01")]
    plan = make_plan(refs, now=NOW, since=None, until=None, done={("INBOX", 1, "1")})
    assert [r.uid for r in plan.to_copy] == ["2"]
    assert [r.uid for r in plan.already_done] == ["1"]
    assert (plan.total_messages, plan.total_bytes) == (2, 200)


def test_the_plan_keeps_newest_first_and_counts_what_is_out_of_range() -> None:
    refs = [ref("INBOX", 1, "2020-01-01"), ref("INBOX", 2, "2021-01-01"), ref("A", 3, "2022-01-01")]
    since = datetime(2020, 6, 1, tzinfo=UTC)
    plan = make_plan(refs, now=NOW, since=since, until=None, done=set())
    assert [r.uid for r in plan.to_copy] == ["3", "2"]
    assert plan.out_of_range == 1


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


@pytest.mark.parametrize(
    ("sizes", "windows"),
    [
        ([10] * 12, [5, 5, 2]),  # two hold 20 bytes: a window grows until it holds 50
        ([30] * 7, [2, 2, 2, 1]),  # two hold 60 bytes: no window grows
        ([10, 10, 10, 60, 10, 10], [4, 2]),
        ([5] * 14, [6, 6, 2]),  # and to six messages at most
        ([10, 10, 10, 10, 75], [4, 1]),  # never past the byte cap
    ],
)
def test_a_fetch_window_of_small_messages_grows_within_its_bounds(
    sizes: list[int], windows: list[int]
) -> None:
    refs = [ref("INBOX", i, "2020-01-01", size) for i, size in enumerate(sizes, start=1)]
    got = list(fetch_windows(refs, 2, 100, small_count=6, small_bytes=50))
    assert [len(w) for w in got] == windows
    assert [r for w in got for r in w] == refs


def test_fetch_windows_start_where_told() -> None:
    refs = [ref("INBOX", i, "2020-01-01", 10) for i in range(1, 8)]
    assert [list(w) for w in fetch_windows(refs, 3, 100, start=2)] == [refs[2:5], refs[5:7]]


@pytest.mark.parametrize(
    ("count", "size", "full"),
    [
        (1, 10, False),
        (2, 60, True),  # two messages, not small: full at two
        (2, 20, False),  # two small ones: grows
        (4, 49, False),
        (4, 50, True),  # grown to the small bytes
        (6, 12, True),  # grown to six messages at most
    ],
)
def test_a_window_is_full_at_its_count_unless_its_messages_are_small(
    count: int, size: int, full: bool
) -> None:
    assert window_full(count, size, most=2, small_most=6, small=50) is full
    assert window_full(count, size, most=2) is (count >= 2)


MiB = 1024 * 1024


@pytest.mark.parametrize(
    ("budget", "server_limit", "unlimited", "expected"),
    [
        (None, None, False, 0),  # the server may refuse anywhere: keep the exact order
        (500 * MiB, None, False, 0),  # an activation quota does not make the server known
        (None, None, True, None),  # no limit anywhere: any order
        (300 * MiB, None, True, 300 * MiB),  # only the activation quota, enforced by the plan
        (100 * MiB, 1000 * MiB, False, 90 * MiB),  # a known limit: less a tenth
        (5 * MiB, 1000 * MiB, False, 4 * MiB),  # ... or at least 1 MiB
        (MiB // 2, 1000 * MiB, False, 0),  # nearly full: the exact order all the way
    ],
)
def test_reorderable_bytes(
    budget: int | None, server_limit: int | None, unlimited: bool, expected: int | None
) -> None:
    assert (
        reorderable_bytes(budget=budget, server_limit=server_limit, server_unlimited=unlimited)
        == expected
    )


# Newest first: A1 B1 A2 C1 B2 | A3 B3 A4 (windows of 5 messages)
INTERLEAVED = [("A", 1), ("B", 1), ("A", 2), ("C", 1), ("B", 2), ("A", 3), ("B", 3), ("A", 4)]


@pytest.mark.parametrize(
    ("room", "expected"),
    [
        # Each window grouped by folder, folders in the order of their newest message.
        (None, "A1 A2 B1 B2 C1 | A3 A4 B3"),
        (800, "A1 A2 B1 B2 C1 | A3 A4 B3"),
        # The second window would end past the room: from there on, the exact order.
        (799, "A1 A2 B1 B2 C1 | A3 B3 A4"),
        (499, "A1 B1 A2 C1 B2 | A3 B3 A4"),
        (0, "A1 B1 A2 C1 B2 | A3 B3 A4"),
    ],
)
def test_send_order_groups_folders_within_windows_that_certainly_fit(
    room: int | None, expected: str
) -> None:
    refs = [ref(folder, uid, "2020-01-01") for folder, uid in INTERLEAVED]  # 100 bytes each
    order = send_order(refs, room, max_count=5, max_bytes=10_000)
    assert " ".join(f"{r.folder}{r.uid}" for r in order) == expected.replace("| ", "")
    assert sorted(order, key=refs.index) == refs  # every message once


def test_send_order_windows_are_cut_by_bytes_too() -> None:
    # A1 (60) B1 (60) | A2 (60) B2 (60): two windows of 120 bytes under a 150-byte cap.
    refs = [ref(f, u, "2020-01-01", 60) for f, u in [("A", 1), ("B", 1), ("A", 2), ("B", 2)]]
    order = send_order(refs, None, max_count=10, max_bytes=150)
    assert [f"{r.folder}{r.uid}" for r in order] == ["A1", "B1", "A2", "B2"]
    assert send_order([], None, 10, 150) == ()


# Twelve messages, newest first, 100 bytes each: windows of 3 are w1 = 1-3, w2 = 4-6, ...
TWELVE = [ref("A" if n % 2 else "B", n, "2020-01-01") for n in range(1, 13)]


@pytest.mark.parametrize(
    ("room", "lanes", "expected"),
    [
        # Windows dealt in turn, so that together the lanes still go newest first.
        (None, 2, "1 2 3 7 8 9 | 4 5 6 10 11 12 ||"),
        (None, 3, "1 2 3 10 11 12 | 4 5 6 | 7 8 9 ||"),
        (None, 4, "1 2 3 | 4 5 6 | 7 8 9 | 10 11 12 ||"),
        (None, 9, "1 2 3 | 4 5 6 | 7 8 9 | 10 11 12 ||"),  # no more lanes than windows
        (None, 1, "1 2 3 4 5 6 7 8 9 10 11 12 ||"),
        # Only whole windows within the room are dealt; the rest is the tail, in order.
        (900, 2, "1 2 3 7 8 9 | 4 5 6 || 10 11 12"),
        (600, 3, "1 2 3 | 4 5 6 || 7 8 9 10 11 12"),
        # Fewer than two windows certainly fit: one lane, the exact order.
        (599, 4, "1 2 3 4 5 6 7 8 9 10 11 12 ||"),
        (0, 4, "1 2 3 4 5 6 7 8 9 10 11 12 ||"),
    ],
)
def test_lane_split_deals_windows_in_turn_and_keeps_the_tail_in_order(
    room: int | None, lanes: int, expected: str
) -> None:
    split = lane_split(TWELVE, room, lanes, max_count=3, max_bytes=10_000, min_windows=1)
    shown = " | ".join(" ".join(str(r.uid) for r in lane) for lane in split.lanes)
    assert f"{shown} || {' '.join(str(r.uid) for r in split.tail)}".strip() == expected
    dealt = [r for lane in split.lanes for r in lane] + list(split.tail)
    assert sorted(dealt, key=TWELVE.index) == TWELVE  # every message once


@pytest.mark.parametrize(("min_windows", "lanes"), [(1, 4), (2, 2), (3, 1), (4, 1), (5, 1)])
def test_lane_split_gives_each_lane_enough_windows_to_be_worth_a_connection(
    min_windows: int, lanes: int
) -> None:
    split = lane_split(TWELVE, None, 4, max_count=3, max_bytes=10_000, min_windows=min_windows)
    assert len(split.lanes) == lanes


def test_lane_split_of_nothing_is_one_empty_lane() -> None:
    assert lane_split([], None, 4, 3, 10_000) == LaneSplit(lanes=((),))

"""The pure parts of incremental passes, as tables: UID sets as servers write them (RFC 4315
APPENDUID, RFC 7162 VANISHED), the pass request a task carries, the folder states and
ledger entries kept in Redis, and the --every time span."""

from __future__ import annotations

import argparse

import pytest

from migrator.argtypes import INTERVAL
from migrator.connectors.imap.uidsets import append_uids, uid_set, uid_sets, vanished_uids
from migrator.errors import BadJob
from migrator.syncstate import FolderState, LedgerEntry, PassKind, PassRequest, Placement


@pytest.mark.parametrize(
    ("text", "limit", "uids"),
    [
        (b"5", 100, [5]),
        (b"3:5,9", 100, [3, 4, 5, 9]),
        (b"5:3", 100, [3, 4, 5]),  # RFC 3501: either order
        (b"1:*", 3, [1, 2, 3]),
        (b"1:4294967295", 4, [1, 2, 3, 4]),  # a range past the last UID stays small
        (b"7:9", 5, []),
    ],
)
def test_uid_sets_are_read_within_the_limit(text: bytes, limit: int, uids: list[int]) -> None:
    assert uid_set(text, limit=limit) == uids


def test_uids_are_written_as_ranges_in_sets_a_command_line_can_hold() -> None:
    assert uid_sets([9, 3, 5, 4, 12, 11, 1, 13, 4], most=100) == [b"1,3:5,9,11:13"]
    odd = list(range(1, 40, 2))
    sets = uid_sets(odd, most=16)
    assert all(len(s) <= 16 for s in sets)
    assert [u for s in sets for u in uid_set(s, limit=100)] == odd
    assert uid_sets([], most=16) == []
    assert uid_sets([1234567], most=3) == [b"1234567"]  # one UID is never cut


@pytest.mark.parametrize(
    ("answer", "count", "expected"),
    [
        (b"[APPENDUID 38505 3955] APPEND completed", 1, (38505, [3955])),
        (b"[APPENDUID 38505 3955:3957] Append completed.", 3, (38505, [3955, 3956, 3957])),
        (b"[appenduid 7 1,4:5] ok", 3, (7, [1, 4, 5])),
        (b"[APPENDUID 38505 3955:3957] Append completed.", 2, None),  # not what was sent
        (b"Append completed.", 1, None),  # a server without UIDPLUS
        (b"[APPENDUID 1 x] odd", 1, None),
    ],
)
def test_appenduid_says_where_each_message_went(
    answer: bytes, count: int, expected: tuple[int, list[int]] | None
) -> None:
    assert append_uids(answer, count) == expected


def test_vanished_answers_name_only_uids_below_the_old_uidnext() -> None:
    answers = [b"(EARLIER) 3:5,9", b"12", b"(EARLIER) 20:4294967295", b"garbage"]
    assert vanished_uids(answers, below=13) == frozenset({3, 4, 5, 9, 12})
    assert vanished_uids(answers, below=1) == frozenset()


def test_a_pass_request_goes_through_json_and_a_strange_one_is_refused() -> None:
    request = PassRequest(PassKind.FINAL, propagate_deletes=True, forward_after=True)
    assert PassRequest.from_json(request.to_json()) == request
    assert PassRequest.from_json(None) == PassRequest()  # a task of an earlier version
    for text in ('{"version": 2, "kind": "sync"}', '{"version": 1, "kind": "later"}', "[1]"):
        with pytest.raises(BadJob):
            PassRequest.from_json(text)


def test_folder_states_and_ledger_entries_read_back_and_odd_text_is_ignored() -> None:
    state = FolderState(uidvalidity=1796393785, uidnext=41, modseq=None)
    assert FolderState.from_text(state.to_text()) == state
    assert FolderState.from_text("not json") is None
    entry = LedgerEntry(Placement("Clients", 7, "12"), ("\\Seen", "$Label1"), ours=True, gone=True)
    assert LedgerEntry.from_text(entry.to_text()) == entry
    # An entry written before `gone` was kept reads as not gone.
    assert LedgerEntry.from_text('["INBOX", 7, "3", [], 0]') == LedgerEntry(
        Placement("INBOX", 7, "3"), (), ours=False
    )
    assert LedgerEntry.from_text("{}") is None


def test_a_folder_state_keeps_a_server_sync_state_beside_the_imap_fields() -> None:
    token = "H4sIAAAAAAAEAO29B2AcSZYlJi9tynt/" * 20  # EWS SyncStates run to kilobytes
    state = FolderState(uidvalidity=88, uidnext=0, sync=token)
    assert FolderState.from_text(state.to_text()) == state
    assert token not in repr(state)  # opaque and long: never in a log line
    # A three-field text (written before `sync` was kept) reads as before: no sync state.
    assert FolderState.from_text("[88, 41, 7]") == FolderState(88, 41, 7)
    for odd in ("[88, 0, null, 5]", '[88, 0, null, "a", "b"]', "[88, 0]", "7"):
        assert FolderState.from_text(odd) is None


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600.0), ("30m", 1800.0), ("90s", 90.0), ("1d", 86400.0), ("45", 45.0)],
)
def test_every_takes_a_time_span(text: str, seconds: float) -> None:
    assert INTERVAL(text) == seconds


@pytest.mark.parametrize("text", ["0s", "-1h", "nanh", "inf", "6 hours", "400d", ""])
def test_every_refuses_what_is_not_a_sensible_span(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        INTERVAL(text)

"""The test EWS server, driven by an unmodified exchangelib over real HTTP.

Every request and response is checked against the published EWS schema; each test's server must
end with zero violations (the ``server`` fixture asserts it)."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from ews_server import EwsServer, ews_account
from exchangelib import (
    UTC,
    CalendarItem,
    Contact,
    EWSDateTime,
    ExtendedProperty,
    Folder,
    Message,
)
from exchangelib.errors import (
    ErrorAccessDenied,
    ErrorFolderExists,
    ErrorImpersonateUserDenied,
    ErrorInvalidSyncStateData,
    ErrorMessageSizeExceeded,
    ErrorNameResolutionNoResults,
    ErrorNonExistentMailbox,
    ErrorQuotaExceeded,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    UnauthorizedError,
)
from exchangelib.items import SAVE_ONLY
from exchangelib.properties import Actions, Address, Rule
from exchangelib.protocol import FaultTolerance

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
ALICE, BOB, CAROL, ADMIN = (
    "alice@example.com",
    "bob@example.com",
    "carol@example.com",
    "admin@example.com",
)
PASSWORD = "secret-pw"
START = EWSDateTime(2024, 1, 1, 8, 0, tzinfo=UTC)


class DeliveryTime(ExtendedProperty):
    property_tag = 0x0E06  # PR_MESSAGE_DELIVERY_TIME: what Exchange shows as DateTimeReceived
    property_type = "SystemTime"


class SubmitTime(ExtendedProperty):
    property_tag = 0x0039  # PR_CLIENT_SUBMIT_TIME
    property_type = "SystemTime"


class MessageFlags(ExtendedProperty):
    property_tag = 0x0E07  # PR_MESSAGE_FLAGS; 1 = MSGFLAG_READ
    property_type = "Integer"


PROPS = {
    "ewstest_delivery": DeliveryTime,
    "ewstest_submit": SubmitTime,
    "ewstest_flags": MessageFlags,
}


@pytest.fixture(scope="module", autouse=True)
def registered_properties() -> Iterator[None]:
    """Registered on exchangelib's Message class for this module only: it is process-global."""
    for name, cls in PROPS.items():
        Message.register(name, cls)
    yield
    for name in PROPS:
        Message.deregister(name)


@pytest.fixture
def server() -> Iterator[EwsServer]:
    with EwsServer() as srv:
        srv.add_user(ALICE, PASSWORD)
        srv.add_user(BOB, PASSWORD)
        srv.add_user(CAROL, PASSWORD)
        srv.add_user(ADMIN, PASSWORD, mailbox=False, impersonation=True)
        yield srv
        srv.assert_no_violations()
        assert srv.requests_validated > 0  # responses too, unless every call was refused


def corpus_messages(max_size: int = 64_000) -> list[bytes]:
    """Real messages: the corpus files but the notes, the mbox files (several messages each) and
    the largest ones (exchangelib reads a non-streamed response about a microsecond per byte)."""
    files = sorted(
        p
        for p in CORPUS.rglob("*")
        if p.is_file()
        and p.suffix != ".md"
        and "mbox" not in p.name
        and p.stat().st_size <= max_size
    )
    assert len(files) >= 10
    return [p.read_bytes() for p in files]


def synthetic(n: int, size: int = 0) -> bytes:
    return (
        f"From: sender@example.org\r\nTo: {ALICE}\r\nSubject: message {n}\r\n"
        f"Message-ID: <m{n}@example.org>\r\nDate: Mon, 1 Jan 2024 08:00:00 +0000\r\n\r\n"
        f"body {n}\r\n{'x' * size}"
    ).encode()


def message(account, folder, raw: bytes, n: int) -> Message:
    when = START + timedelta(hours=n)
    return Message(
        account=account,
        folder=folder,
        mime_content=raw,
        is_read=True,
        ewstest_delivery=when,
        ewstest_submit=when,
        ewstest_flags=1,
    )


def test_account_sees_distinguished_folders_with_their_classes(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    assert account.inbox.folder_class == "IPF.Note"
    assert account.calendar.folder_class == "IPF.Appointment"
    assert account.contacts.folder_class == "IPF.Contact"
    assert account.tasks.folder_class == "IPF.Task"
    assert account.inbox.total_count == 0
    assert account.msg_folder_root.name == "Top of Information Store"


def test_creating_a_folder_twice_raises_folder_exists(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    Folder(parent=account.inbox, name="Migrated").save()
    with pytest.raises(ErrorFolderExists):
        Folder(parent=account.inbox, name="Migrated").save()
    assert (account.inbox / "Migrated").name == "Migrated"
    assert [f.name for f in server.store[ALICE].folders.values()].count("Migrated") == 1


def test_bulk_created_corpus_messages_read_back_newest_first_byte_for_byte(
    server: EwsServer,
) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    folder = Folder(parent=account.inbox, name="Migrated")
    folder.save()
    corpus = corpus_messages()
    raws = [corpus[n % len(corpus)] for n in range(30)]
    results = account.bulk_create(
        folder,
        [message(account, folder, raw, n) for n, raw in enumerate(raws)],
        message_disposition=SAVE_ONLY,
    )
    assert all(r.id for r in results)

    got = list(
        folder.all()
        .order_by("-datetime_received")
        .only("mime_content", "is_read", "datetime_received", "size", "message_id", "ewstest_flags")
    )
    assert [g.mime_content for g in got] == list(reversed(raws))
    assert [g.datetime_received for g in got] == [
        START + timedelta(hours=n) for n in reversed(range(30))
    ]
    assert all(g.is_read and g.ewstest_flags == 1 for g in got)
    assert [g.size for g in got] == [len(r) for r in reversed(raws)]
    assert got[0].message_id and got[0].message_id.startswith("<")
    assert server.calls.count("CreateItem") == 1  # one batch, one call
    assert server.responses_validated == len(server.calls) > 0  # every answer schema-checked


def test_find_item_pages_through_a_folder(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    account.bulk_create(
        account.inbox, [message(account, account.inbox, synthetic(n), n) for n in range(25)]
    )
    ids = [
        m.message_id for m in account.inbox.all().order_by("datetime_received").only("message_id")
    ]
    assert ids == [f"<m{n}@example.org>" for n in range(25)]
    found = list(
        account.inbox.filter(datetime_received__gte=START + timedelta(hours=20)).only("message_id")
    )
    assert len(found) == 5
    paged = list(account.inbox.all().only("message_id").order_by("-datetime_received")[:7])
    assert [m.message_id for m in paged] == [f"<m{n}@example.org>" for n in range(24, 17, -1)]


def test_calendar_item_and_contact_round_trip_through_get_item(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    meeting = CalendarItem(
        account=account,
        folder=account.calendar,
        subject="Cutover",
        start=START,
        end=START + timedelta(hours=1),
    )
    meeting.save()
    contact = Contact(
        account=account,
        folder=account.contacts,
        given_name="Bob",
        surname="Builder",
        display_name="Bob",
    )
    contact.save()

    got = account.calendar.get(id=meeting.id)
    assert (got.subject, got.start, got.end) == ("Cutover", START, START + timedelta(hours=1))
    assert server.store[ALICE].items[meeting.id].item_class == "IPM.Appointment"
    person = account.contacts.get(id=contact.id)
    assert (person.given_name, person.surname) == ("Bob", "Builder")


def test_export_then_upload_copies_an_item_exactly(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    raw = corpus_messages()[0]
    (created,) = account.bulk_create(account.inbox, [message(account, account.inbox, raw, 3)])
    (data,) = account.export([created])
    assert base64.b64decode(data)  # opaque, but base64 as Exchange's
    target = Folder(parent=account.msg_folder_root, name="Restored")
    target.save()
    ((new_id, _),) = account.upload([(target, data)])
    copy = target.get(id=new_id)
    assert copy.mime_content == raw
    assert copy.datetime_received == START + timedelta(hours=3)


def test_inbox_rules_are_created_listed_and_deleted(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    assert account.rules == []
    rule = Rule(
        account=account,
        display_name="Migration forward",
        priority=1,
        is_enabled=True,
        actions=Actions(redirect_to_recipients=[Address(email_address="alice@new.example.net")]),
    )
    account.create_rule(rule)
    (listed,) = account.rules
    assert listed.display_name == "Migration forward"
    assert listed.id == rule.id
    assert [a.email_address for a in listed.actions.redirect_to_recipients] == [
        "alice@new.example.net"
    ]
    account.delete_rule(listed)
    assert account.rules == []


def test_impersonation_by_an_admin_acts_on_the_target_mailbox(server: EwsServer) -> None:
    account = ews_account(server, BOB, password=PASSWORD, impersonate=ADMIN)
    account.bulk_create(account.inbox, [message(account, account.inbox, synthetic(1), 1)])
    assert len(server.store.messages(BOB, "inbox")) == 1


def test_impersonation_without_the_right_is_denied(server: EwsServer) -> None:
    account = ews_account(server, BOB, password=PASSWORD, impersonate=CAROL)
    with pytest.raises(ErrorImpersonateUserDenied):
        _ = account.inbox


def test_delegate_needs_rights_on_the_mailbox(server: EwsServer) -> None:
    with pytest.raises(ErrorAccessDenied):
        _ = ews_account(server, BOB, password=PASSWORD, user=CAROL).inbox
    server.grant_delegate(CAROL, BOB)
    account = ews_account(server, BOB, password=PASSWORD, user=CAROL)
    account.bulk_create(account.inbox, [message(account, account.inbox, synthetic(1), 1)])
    assert len(server.store.messages(BOB, "inbox")) == 1


def test_resolve_names_finds_mailboxes_by_address(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    (found,) = account.protocol.resolve_names([BOB])
    assert found.email_address == BOB
    (missing,) = account.protocol.resolve_names(["nobody@example.com"])
    assert isinstance(missing, ErrorNameResolutionNoResults)  # returned, not raised


def test_sync_folder_hierarchy_lists_every_folder_once(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    Folder(parent=account.inbox, name="Migrated").save()
    changes = list(account.root.sync_hierarchy())
    names = [f.name for kind, f in changes if kind == "create"]
    assert "Migrated" in names and "Inbox" in names
    assert len(names) == len(set(names))


def test_sync_folder_items_pages_changes_from_a_sync_state_and_refuses_a_forgotten_one(
    server: EwsServer,
) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    inbox = account.inbox
    account.bulk_create(inbox, [message(account, inbox, synthetic(n), n) for n in range(7)])
    before = len(server.calls)
    first = list(inbox.sync_items(only_fields=["message_id"], max_changes_returned=3))
    assert server.calls[before:] == ["SyncFolderItems"] * 3  # 3 + 3 + 1, the last in range
    assert sorted(i.message_id for kind, i in first if kind == "create") == sorted(
        f"<m{n}@example.org>" for n in range(7)
    )
    state = inbox.item_sync_state
    items = {i.message_id: i for i in inbox.all().only("message_id", "is_read")}
    read, gone = items["<m1@example.org>"], items["<m2@example.org>"]
    read.is_read = False  # created read
    read.save(update_fields=["is_read"])
    gone.delete()
    account.bulk_create(inbox, [message(account, inbox, synthetic(9), 9)])

    changes = list(inbox.sync_items(sync_state=state, only_fields=["message_id"]))

    kinds = Counter(kind for kind, _ in changes)
    assert kinds == Counter({"create": 1, "delete": 1, "read_flag_change": 1})
    assert (read.id, False) in [(i[0].id, i[1]) for k, i in changes if k == "read_flag_change"]
    assert inbox.item_sync_state != state
    assert list(inbox.sync_items(sync_state=inbox.item_sync_state)) == []
    server.store[ALICE].sync_states.clear()
    with pytest.raises(ErrorInvalidSyncStateData):
        list(inbox.sync_items(sync_state=state))


def test_a_mailbox_that_does_not_exist_raises(server: EwsServer) -> None:
    with pytest.raises(ErrorNonExistentMailbox):
        _ = ews_account(server, "nobody@example.com", password=PASSWORD, impersonate=ADMIN).inbox


def test_quota_stops_a_batch_midway_keeping_the_earlier_items(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    raws = [synthetic(n) for n in range(6)]
    server.store[ALICE].quota_bytes = sum(len(r) for r in raws[:3])
    with pytest.raises(ErrorQuotaExceeded):
        account.bulk_create(
            account.inbox, [message(account, account.inbox, r, n) for n, r in enumerate(raws)]
        )
    assert sorted(i.mime for i in server.store.messages(ALICE, "inbox")) == sorted(raws[:3])


def test_injected_quota_fault_counts_items(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    server.faults.quota_exceeded_after(2)
    with pytest.raises(ErrorQuotaExceeded):
        account.bulk_create(
            account.inbox, [message(account, account.inbox, synthetic(n), n) for n in range(4)]
        )
    assert len(server.store.messages(ALICE, "inbox")) == 2
    assert server.faults.injected["quota"] == 2  # items 3 and 4 both refused


def test_an_item_over_the_size_limit_is_refused_alone(server: EwsServer) -> None:
    server.max_message_size = 10_000
    account = ews_account(server, ALICE, password=PASSWORD)
    raws = [synthetic(0), synthetic(1, size=20_000), synthetic(2)]
    results = account.bulk_create(
        account.inbox, [message(account, account.inbox, r, n) for n, r in enumerate(raws)]
    )
    assert isinstance(results[1], ErrorMessageSizeExceeded)
    assert sorted(i.mime for i in server.store.messages(ALICE, "inbox")) == sorted(
        [raws[0], raws[2]]
    )


def test_server_busy_is_retried_and_every_item_arrives_once(server: EwsServer) -> None:
    account = ews_account(
        server, ALICE, password=PASSWORD, retry_policy=FaultTolerance(max_wait=10)
    )
    _ = account.inbox
    server.faults.busy_every(5, back_off_ms=200)
    account.bulk_create(
        account.inbox,
        [message(account, account.inbox, synthetic(n), n) for n in range(30)],
        chunk_size=3,
    )
    stored = Counter(i.internet_message_id for i in server.store.messages(ALICE, "inbox"))
    assert stored == Counter(f"<m{n}@example.org>" for n in range(30))
    assert server.faults.injected["busy"] >= 2


def test_one_http_500_is_retried_under_fault_tolerance(server: EwsServer) -> None:
    account = ews_account(
        server, ALICE, password=PASSWORD, retry_policy=FaultTolerance(max_wait=10)
    )
    _ = account.inbox
    server.faults.http_status_once(500)
    account.bulk_create(account.inbox, [message(account, account.inbox, synthetic(1), 1)])
    assert len(server.store.messages(ALICE, "inbox")) == 1
    assert server.faults.injected["http_500"] == 1


def test_one_http_500_fails_fast_by_default(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    _ = account.inbox
    server.faults.http_status_once(500)
    # exchangelib re-raises its ErrorInternalServerTransientError as ErrorServerBusy
    with pytest.raises(ErrorServerBusy, match="ErrorInternalServerTransientError"):
        account.bulk_create(account.inbox, [message(account, account.inbox, synthetic(1), 1)])
    assert server.store.messages(ALICE, "inbox") == []


def test_wrong_password_is_http_401(server: EwsServer) -> None:
    with pytest.raises(UnauthorizedError):
        _ = ews_account(server, ALICE, password="wrong").inbox
    account = ews_account(server, ALICE, password=PASSWORD)
    _ = account.inbox
    server.faults.http_status_once(401)
    with pytest.raises(UnauthorizedError):
        account.inbox.refresh()


def test_a_single_401_is_retried_under_fault_tolerance(server: EwsServer) -> None:
    account = ews_account(
        server, ALICE, password=PASSWORD, retry_policy=FaultTolerance(max_wait=10)
    )
    _ = account.inbox
    server.faults.http_status_once(401)
    account.inbox.refresh()
    assert server.faults.injected["http_401"] == 1


def test_a_dropped_connection_surfaces_and_a_retry_stores_once(server: EwsServer) -> None:
    # exchangelib retries a connection error only with a second session in its pool, which a
    # single-threaded client never has: the caller sees ErrorTimeoutExpired even with
    # FaultTolerance.
    account = ews_account(
        server, ALICE, password=PASSWORD, retry_policy=FaultTolerance(max_wait=10)
    )
    _ = account.inbox
    server.faults.drop_connection_once()
    with pytest.raises(ErrorTimeoutExpired):
        account.bulk_create(account.inbox, [message(account, account.inbox, synthetic(1), 1)])
    assert server.store.messages(ALICE, "inbox") == []
    account.bulk_create(account.inbox, [message(account, account.inbox, synthetic(1), 1)])
    assert len(server.store.messages(ALICE, "inbox")) == 1


def test_a_connection_dropped_after_processing_leaves_the_item_stored(server: EwsServer) -> None:
    account = ews_account(server, ALICE, password=PASSWORD)
    _ = account.inbox
    server.faults.drop_connection_once(after_processing=True)
    with pytest.raises(ErrorTimeoutExpired):
        account.bulk_create(account.inbox, [message(account, account.inbox, synthetic(1), 1)])
    assert len(server.store.messages(ALICE, "inbox")) == 1  # a blind retry would duplicate it


# GetFolder without its required FolderShape
INVALID_GET_FOLDER = b"""<?xml version="1.0" encoding="utf-8"?>
<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"
    xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"
    xmlns:t="http://schemas.microsoft.com/exchange/services/2006/types">
  <s:Body><m:GetFolder>
    <m:FolderIds><t:DistinguishedFolderId Id="inbox"/></m:FolderIds>
  </m:GetFolder></s:Body>
</s:Envelope>"""


def test_a_request_that_breaks_the_schema_is_a_fault_and_a_violation(server: EwsServer) -> None:
    reply = requests.post(
        server.url,
        data=INVALID_GET_FOLDER,
        headers={"Content-Type": "text/xml; charset=utf-8"},
        auth=(ALICE, PASSWORD),
        timeout=10,
    )
    assert reply.status_code == 500
    assert b"<s:Fault>" in reply.content and b"ErrorSchemaValidation" in reply.content
    assert [op for op, _ in server.violations] == ["GetFolder"]
    assert "FolderShape" in server.violations[0][1]
    server.violations.clear()  # expected; the fixture asserts none other
    _ = ews_account(server, ALICE, password=PASSWORD).inbox

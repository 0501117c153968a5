"""IMAP (Dovecot) to Exchange through the copier and the EWS target, against the schema-checking
test EWS server (tests/ews_server) and the test Redis; no Celery here."""

from __future__ import annotations

import base64
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from ews_server import EwsServer
from ews_server.store import Item
from ewskit import IMAP_TO_EWS_FOLDER
from exchangelib import errors as ews_errors
from servers.dovecot import MakeUser
from servers.mailgen import Fill
from support import (
    EWS_ADMIN,
    EWS_PASSWORD,
    CopyMailbox,
    ews_settings,
    newest_that_fit,
)

from migrator.connectors.ews.account import client_assertion, ews_call, translate
from migrator.connectors.ews.settings import endpoint_url
from migrator.connectors.ews.target import EwsTarget
from migrator.errors import (
    ConfigError,
    LoginFailed,
    MailboxNotReady,
    MessageRefused,
    PermanentError,
    QuotaExceeded,
    TransientError,
)
from migrator.foldermap import SpecialFolder, TargetFolder
from migrator.model import Credentials
from migrator.recognition import content_key, epoch_seconds, message_digest
from migrator.report import MailboxState
from migrator.secrets import Secret
from migrator.state import StateStore
from migrator.targets.base import AppendItem

T = "{http://schemas.microsoft.com/exchange/services/2006/types}"
FOLDERS = {"INBOX": 30, "Sent Messages": 12, "Spam": 6, "Projects/2024": 8, "INBOX/Important": 6}
ADMIN = Credentials(EWS_ADMIN, Secret(EWS_PASSWORD))


def ext(item: Item, tag: int) -> str | None:
    prop = item.extended.get((("PropertyTag", hex(tag)),))
    return prop.findtext(f"{T}Value") if prop is not None else None


def all_mime(ews: EwsServer, smtp: str) -> Counter[bytes]:
    return Counter(i.mime for i in ews.store[smtp].items.values())


def test_copy_to_ews_keeps_bytes_read_state_dates_flags_and_maps_folders(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, FOLDERS)
    calls_before = len(ews.calls)

    status = copy_mailbox(source, target, into=ews)

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == status.total_messages == len(sent)
    for folder, path in IMAP_TO_EWS_FOLDER.items():
        items = ews.store.items_at(target, path)
        expected = [m for m in sent if m.folder == folder]
        assert Counter(i.mime for i in items) == Counter(m.raw for m in expected), folder
        stored = {i.mime: i for i in items}
        for message in expected:
            item = stored[message.raw]
            assert item.is_read == ("\\Seen" in message.flags)
            assert item.received == message.internaldate  # PR_MESSAGE_DELIVERY_TIME
            flags = int(ext(item, 0x0E07) or "0")
            assert flags & 0x8 == 0  # never MSGFLAG_UNSENT: not a draft dated today
            assert bool(flags & 0x1) == item.is_read
            assert (ext(item, 0x1090) == "2") == ("\\Flagged" in message.flags)
    # Newest first across folders interleaves them; each run of one folder is one call.
    assert ews.calls[calls_before:].count("CreateItem") < len(sent)


def test_rerun_after_redis_is_lost_recognises_every_message_by_its_source_key(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    redis_url: str,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, {"INBOX": 20, "Archive": 10})
    copy_mailbox(source, target, into=ews)
    StateStore.from_url(redis_url).client.flushall()

    status = copy_mailbox(source, target, into=ews)

    assert status.state is MailboxState.SYNCED
    assert status.copied_messages == 0 and status.done_messages == len(sent)
    assert all_mime(ews, target) == Counter(m.raw for m in sent)


def test_server_busy_every_fifth_call_loses_and_duplicates_nothing(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, {"INBOX": 60, "Sent": 20, "Lists/dev": 20})
    ews.faults.busy_every(5, back_off_ms=200)

    status = copy_mailbox(source, target, into=ews)

    assert status.state is MailboxState.SYNCED, status
    assert ews.faults.injected["busy"] >= 3
    assert all_mime(ews, target) == Counter(m.raw for m in sent)


def test_quota_stop_keeps_the_newest_messages(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, {"INBOX": 40, "Sent": 30, "Old": 30})
    quota = sum(m.size for m in sent) // 3
    fits = newest_that_fit(sent, quota)

    status = copy_mailbox(source, target, into=ews, quotas={target.lower(): quota})

    assert status.state is MailboxState.QUOTA_STOPPED
    assert status.done_messages == len(fits)
    assert status.left_messages == len(sent) - len(fits)
    assert all_mime(ews, target) == Counter(m.raw for m in fits)


def test_error_quota_exceeded_stops_the_mailbox_with_the_newest_messages(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, {"INBOX": 50, "Sent": 20})
    ews.faults.quota_exceeded_after(37)  # mid-batch: ErrorQuotaExceeded per item from the 38th

    status = copy_mailbox(source, target, into=ews)

    assert status.state is MailboxState.QUOTA_STOPPED, status
    assert status.done_messages == 37
    assert status.left_messages == len(sent) - 37
    newest = sorted(sent, key=lambda m: m.internaldate, reverse=True)[:37]
    assert all_mime(ews, target) == Counter(m.raw for m in newest)


def test_a_message_over_the_size_limit_is_skipped_counted_and_named(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    make_ews_mailbox: MakeUser,
    ews: EwsServer,
    redis_url: str,
) -> None:
    source, target = make_user(), make_ews_mailbox()
    sent = fill(source, {"INBOX": 20})
    biggest = max(sent, key=lambda m: m.size)
    ews.max_message_size = biggest.size - 1
    too_big = [m for m in sent if m.size > ews.max_message_size]
    calls_before = len(ews.calls)

    status = copy_mailbox(source, target, into=ews)

    assert status.state is MailboxState.SYNCED, status
    assert status.skipped_messages == len(too_big) >= 1
    assert all_mime(ews, target) == Counter(m.raw for m in sent if m not in too_big)
    assert ews.calls[calls_before:].count("CreateItem") == 1  # one folder, 20 < batch size
    store = StateStore.from_url(redis_url)
    (skipped, *_) = json.loads(store.client.hget("migrator:mbx:b1:00001", "skipped") or "[]")
    assert skipped["folder"] == "INBOX" and "ErrorMessageSizeExceeded" in skipped["reason"]


def test_a_target_mailbox_that_does_not_exist_is_not_ready(
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ews: EwsServer,
) -> None:
    source = make_user()
    fill(source, {"INBOX": 3})

    status = copy_mailbox(source, "nobody@example.com", into=ews)

    assert status.state is MailboxState.NOT_READY
    assert "ErrorNonExistentMailbox" in status.last_error
    with pytest.raises(MailboxNotReady):
        EwsTarget(ews_settings(ews.url), ADMIN, "nobody@example.com")


# -- the adapter alone, against the test server ------------------------------------------


def raw(n: int) -> bytes:
    return (
        f"From: a@example.org\r\nTo: b@example.com\r\nSubject: m{n}\r\n"
        f"Message-ID: <adapter{n}@example.org>\r\nDate: Mon, 1 Jan 2024 08:00:00 +0000\r\n\r\n"
        f"body {n}\r\n"
    ).encode()


def item(folder: str, n: int) -> AppendItem:
    body = raw(n)
    when = datetime(2024, 1, 1, 8, n, tzinfo=UTC)
    return AppendItem(folder, body, ("\\Seen",), when, content_key(body, complete=True))


def test_folders_are_created_once_under_the_right_parent(
    make_ews_mailbox: MakeUser, ews: EwsServer
) -> None:
    target = make_ews_mailbox()
    wanted = [
        TargetFolder(SpecialFolder.INBOX, ("Important",)),
        TargetFolder(None, ("Archive", "2019")),
        TargetFolder(SpecialFolder.DELETED_ITEMS),
    ]
    first = EwsTarget(ews_settings(ews.url), ADMIN, target)
    names = [first.open_folder(f) for f in wanted]
    second = EwsTarget(ews_settings(ews.url), ADMIN, target)
    assert [second.open_folder(f) for f in wanted] == names
    assert names == ["Inbox/Important", "Archive/2019", "Deleted Items"]
    folders = [f.name for f in ews.store[target].folders.values()]
    assert folders.count("Important") == folders.count("Archive") == folders.count("2019") == 1
    box = ews.store[target]
    (important,) = [f for f in box.folders.values() if f.name == "Important"]
    assert important.parent_id == box.distinguished("inbox").id


def test_a_connection_dropped_after_create_item_is_recognised_by_the_next_index(
    make_ews_mailbox: MakeUser, ews: EwsServer
) -> None:
    target = make_ews_mailbox()
    adapter = EwsTarget(ews_settings(ews.url), ADMIN, target)
    name = adapter.open_folder(TargetFolder(SpecialFolder.INBOX))
    assert adapter.index(name) == []
    ews.faults.drop_connection_once(after_processing=True)

    with pytest.raises(TransientError):
        adapter.append_batch([item(name, n) for n in range(3)])

    assert len(ews.store.messages(target, "inbox")) == 3  # stored, though the client never knew
    again = EwsTarget(ews_settings(ews.url), ADMIN, target)
    copies = again.index(again.open_folder(TargetFolder(SpecialFolder.INBOX)))
    # Each item carries the content key and digest of the MIME it was made from, its read
    # state and its delivery time, whatever MIME Exchange serves back.
    assert sorted((c.key, c.digest, c.flags, c.date) for c in copies) == sorted(
        (
            content_key(raw(n), complete=True),
            message_digest(raw(n)),
            frozenset({"\\seen"}),
            epoch_seconds(datetime(2024, 1, 1, 8, n, tzinfo=UTC)),
        )
        for n in range(3)
    )


def test_one_refused_item_does_not_stop_the_batch_and_quota_stops_the_rest(
    make_ews_mailbox: MakeUser, ews: EwsServer
) -> None:
    target = make_ews_mailbox()
    adapter = EwsTarget(ews_settings(ews.url), ADMIN, target)
    name = adapter.open_folder(TargetFolder(None, ("Migrated",)))
    ews.max_message_size = len(raw(0)) + 10
    big = AppendItem(name, raw(1) + b"x" * 100, (), None, None)
    ews.faults.quota_exceeded_after(2)

    outcomes = adapter.append_batch(
        [item(name, 0), big, item(name, 2), item(name, 3), item(name, 4)]
    )

    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], MessageRefused)
    assert all(isinstance(o, QuotaExceeded) for o in outcomes[3:])
    assert adapter.throttled_seconds == 0.0


# -- pure parts of migrator.connectors.ews.settings -------------------------------------


@pytest.mark.parametrize(
    ("text", "url"),
    [
        ("mail.example.com", "https://mail.example.com/EWS/Exchange.asmx"),
        ("mail.example.com:8443", "https://mail.example.com:8443/EWS/Exchange.asmx"),
        ("https://outlook.office365.com", "https://outlook.office365.com/EWS/Exchange.asmx"),
        ("http://127.0.0.1:8080/EWS/Exchange.asmx", "http://127.0.0.1:8080/EWS/Exchange.asmx"),
    ],
)
def test_target_server_becomes_an_ews_endpoint(text: str, url: str) -> None:
    assert endpoint_url(text) == url


@pytest.mark.parametrize("text", ["ftp://h", "https://user:pw@h", "h/path", ""])
def test_a_target_server_that_is_no_endpoint_is_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        endpoint_url(text)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (ews_errors.ErrorQuotaExceeded("full"), QuotaExceeded),
        (ews_errors.ErrorMessageSizeExceeded("big"), MessageRefused),
        (ews_errors.ErrorNonExistentMailbox("who"), MailboxNotReady),
        (ews_errors.ErrorImpersonateUserDenied("no"), MailboxNotReady),
        (ews_errors.UnauthorizedError("401"), LoginFailed),
        (ews_errors.ErrorTimeoutExpired("drop"), TransientError),
        (ews_errors.ErrorServerBusy("busy", back_off=1), TransientError),
        (ews_errors.TransportError("reset"), TransientError),
        (requests.ConnectionError("reset"), TransientError),
        (ews_errors.ErrorInvalidRequest("bad"), PermanentError),
    ],
)
def test_exchangelib_errors_become_migrator_errors(error: Exception, kind: type) -> None:
    translated = translate(error, "target mailbox x@example.com")
    assert type(translated) is kind
    assert str(translated).startswith("target mailbox x@example.com: ")


def test_server_busy_is_waited_out_as_the_server_asks() -> None:
    waits: list[float] = []
    answers: list[object] = [ews_errors.ErrorServerBusy("busy", back_off=0.2), "done"]

    def call() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert ews_call("x", call, sleep=waits.append) == "done"
    assert waits == [0.2]


def test_a_certificate_assertion_is_signed_by_the_certificates_key(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "migrator")])
    now = datetime.now(UTC)
    cert = x509.CertificateBuilder(
        subject_name=name,
        issuer_name=name,
        public_key=key.public_key(),
        serial_number=1,
        not_valid_before=now,
        not_valid_after=now + timedelta(days=1),
    ).sign(key, hashes.SHA256())
    pem = tmp_path / "app.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )

    token = client_assertion(pem, "client-1", "https://login.example/token")

    head, body, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    assert (claims["iss"], claims["sub"], claims["aud"]) == (
        "client-1",
        "client-1",
        "https://login.example/token",
    )
    assert json.loads(base64.urlsafe_b64decode(head + "=="))["alg"] == "RS256"
    key.public_key().verify(
        base64.urlsafe_b64decode(signature + "=="),
        f"{head}.{body}".encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )

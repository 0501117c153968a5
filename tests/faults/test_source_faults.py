"""Sources that hold back or hide mail: a FETCH answered without a message, a Gmail-like
All Mail holding archived mail no other folder has, POP3 lines past poplib's limit and
dates hidden behind a malformed header line.  Nothing may be left behind in silence."""

from __future__ import annotations

import ssl
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime

import pytest
from faultkit import ExactlyOnce, digest, expected_at_target, run_options, source_and_target, stored
from imapclient import IMAPClient
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer, MakeUser
from servers.dovecot_config import ALL_MAIL_FOLDER
from servers.mailgen import Fill
from support import CopyMailbox, batch_job, batch_password, imaps, snapshot, source_row

from migrator.connectors.imap.source import ImapSource
from migrator.connectors.imap.target import ImapTarget
from migrator.copier import CopyOptions, migrate_mailbox
from migrator.foldermap import default_folder_map
from migrator.model import ConnectOptions
from migrator.plan import MessageRef
from migrator.report import MailboxState
from migrator.sources.base import SourceFolder
from migrator.state import MailboxStatus, StateStore

# -- a FETCH answered without some of the messages asked for ---------------------------


class Withholding:
    """A real IMAP source (our MailboxSource) whose server leaves some messages out of its
    FETCH answers: `withheld(ref, pass_number)` says which.  No server here can be made to
    do that, so it wraps the adapter; every other call goes to Dovecot as usual."""

    passes = 0

    def __init__(self, inner: ImapSource, withheld: object) -> None:
        self._inner = inner
        self._withheld = withheld
        Withholding.passes += 1
        self._pass = Withholding.passes

    def list_folders(self) -> list[SourceFolder]:
        return self._inner.list_folders()

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        return self._inner.list_messages(folder)

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        for ref, body in self._inner.fetch(refs):
            if not self._withheld(ref, self._pass):  # type: ignore[operator]
                yield ref, body

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        return self._inner.heads(refs)

    def session(self) -> None:
        return None

    def close(self) -> None:
        self._inner.close()


def _copy_withholding(
    dovecot: DovecotServer,
    tls_files: TlsFiles,
    redis_url: str,
    source: tuple[str, str],
    target: str,
    withheld: object,
) -> object:
    job = batch_job(source_row(imaps(dovecot), *source, target))
    options, _ = run_options(dovecot.imaps_port, dovecot.imaps_port, tls_files.ca_cert)
    connect = ConnectOptions(timeout=30, ca_file=str(tls_files.ca_cert))
    store = StateStore.from_url(redis_url)
    Withholding.passes = 0
    return migrate_mailbox(
        lambda: Withholding(ImapSource(job, connect), withheld),  # type: ignore[arg-type]
        lambda: ImapTarget(
            options.target.server, options.target.credentials(target), target, connect
        ),
        default_folder_map(),
        store.progress("b", "1", "withheld"),
        CopyOptions(max_passes=3, max_wait=0.05, late_commit_grace=0),
    )


@pytest.mark.parametrize("answer", ["one message left out", "fewer messages than asked"])
def test_messages_the_source_never_sends_are_named_and_the_mailbox_is_not_done(
    answer: str,
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("withheld")
    source, target = make_user(password), make_user()
    sent = fill(source, {"INBOX": 250, "Sent": 50}, password)
    newest = sorted(sent, key=lambda m: m.internaldate, reverse=True)
    # populate() appends each folder in order: UID n holds its message n - 1.
    # One in the middle of the first window, or the first window's last ten.
    withheld = newest[7:8] if answer == "one message left out" else newest[90:100]
    missing = {(m.folder, str(m.index + 1)) for m in withheld}
    result = _copy_withholding(
        dovecot, tls_files, redis_url, (source, password), target,
        lambda ref, _pass: (ref.folder, ref.uid) in missing,
    )  # fmt: skip

    assert result.state is MailboxState.FAILED, result  # type: ignore[attr-defined]
    named = {s.uid for s in result.skipped if "never sent" in s.reason}  # type: ignore[attr-defined]
    assert len(named) == len(missing)
    assert f"{len(missing)} messages listed by the source" in result.error  # type: ignore[attr-defined]
    expected, got = source_and_target(
        dovecot, (source, password), (target, DEFAULT_USER_PASSWORD), ssl_context
    )
    for folder in expected:
        expected[folder] -= Counter(digest(m.raw) for m in withheld)
    exactly_once(expected, got)


def test_a_message_held_back_once_is_copied_by_the_next_pass(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("held-once")
    source, target = make_user(password), make_user()
    sent = fill(source, {"INBOX": 120}, password)
    result = _copy_withholding(
        dovecot, tls_files, redis_url, (source, password), target,
        lambda ref, number: number == 1 and (ref.folder, ref.uid) == ("INBOX", "6"),
    )  # fmt: skip
    assert len(sent) == 120
    assert result.state is MailboxState.DONE, result  # type: ignore[attr-defined]
    exactly_once.copied(source, password, target)


# -- Gmail's All Mail ------------------------------------------------------------------


def _message(n: int, *, with_id: bool = True) -> tuple[bytes, datetime]:
    when = datetime(2024, 3, n, 9, 0, tzinfo=UTC)
    mid = f"Message-ID: <gmail{n}@mail.example>\r\n" if with_id else ""
    raw = (
        f"From: a{n}@example.org\r\nTo: owner@example.test\r\nSubject: message {n}\r\n"
        f"{mid}Date: {when:%a, %d %b %Y %H:%M:%S} +0000\r\n\r\nbody {n}\r\n"
    ).encode()
    return raw, when


def test_archived_mail_only_all_mail_holds_is_copied_to_archive(
    dovecot: DovecotServer,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("gmail")
    source, target = make_user(password), make_user()
    m = {n: _message(n) for n in range(1, 5)}
    m[5] = _message(5, with_id=False)  # archived, and no Message-ID to tell it by
    m[6] = _message(6, with_id=False)  # labelled, no Message-ID
    folders = {
        "INBOX": [1, 2, 6],
        "Work": [3, 1],  # a second label on message 1
        ALL_MAIL_FOLDER: [1, 2, 3, 4, 5, 6],  # 4 and 5 were archived: only here
    }
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl=True, ssl_context=ssl_context) as c:
        c.plain_login(source, password)
        for folder, numbers in folders.items():
            if not c.folder_exists(folder):
                c.create_folder(folder)
            for n in numbers:
                c.append(folder, m[n][0], (), m[n][1])
        (flags,) = [f for f, _, name in c.list_folders() if name == ALL_MAIL_FOLDER]
    assert b"\\All" in flags

    status = copy_mailbox(source, target, password=password, batch_id="b")

    assert status.state is MailboxState.SYNCED, status
    assert status.copied_messages == 7
    got = stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert ALL_MAIL_FOLDER not in got and "[Gmail]" not in got
    view = stored(dovecot, source, password, ssl_context)
    view[ALL_MAIL_FOLDER] = [m[4][0], m[5][0]]  # what no other folder held
    expected = expected_at_target(view, lambda name: "Archive" if name == ALL_MAIL_FOLDER else name)
    exactly_once(expected, got)


# -- POP3: long lines and hidden dates -------------------------------------------------


RECEIVED = datetime(2024, 9, 3, 10, 42, 11, tzinfo=UTC)
RECEIVED_LINE = b"Received: from mx by pop.example.test; Tue, 3 Sep 2024 10:42:11 +0000\r\n"


CopyOverPop3 = Callable[[str, list[bytes]], tuple[MailboxStatus, str]]


@pytest.fixture
def copy_over_pop3(make_user: MakeUser, fill: Fill, copy_mailbox: CopyMailbox) -> CopyOverPop3:
    """``copy_over_pop3(tag, messages)``: `messages` delivered to a fresh source, copied
    over POP3 to a fresh target; the mailbox's status, and the target's login."""

    def copy(tag: str, messages: list[bytes]) -> tuple[MailboxStatus, str]:
        password = batch_password(tag)
        source, target = make_user(password, prefix="pop3src"), make_user()
        fill.append(source, "INBOX", messages, password)
        status = copy_mailbox(source, target, password=password, batch_id="b", source_kind="pop")
        return status, target

    return copy


def test_pop3_lines_past_2048_octets_are_copied(
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    copy_over_pop3: CopyOverPop3,
    exactly_once: ExactlyOnce,
) -> None:
    long_lines = (
        RECEIVED_LINE
        + b"Message-ID: <long@example.org>\r\nDate: Tue, 3 Sep 2024 10:40:00 +0000\r\n"
        b"X-Long: " + b"h" * 4096 + b"\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + b"QUJD" * 1250
        + b"\r\n"  # one 5,000-octet base64 line
    )
    plain = RECEIVED_LINE + b"Message-ID: <plain@example.org>\r\n\r\nbody\r\n"
    status, target = copy_over_pop3("pop3-long", [long_lines, plain])
    assert status.state is MailboxState.SYNCED, status
    expected = {"INBOX": Counter(digest(r) for r in (long_lines, plain))}
    exactly_once(expected, stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context))


def test_pop3_copies_get_the_newest_received_date_even_behind_a_malformed_line(
    dovecot: DovecotServer,
    ssl_context: ssl.SSLContext,
    copy_over_pop3: CopyOverPop3,
    exactly_once: ExactlyOnce,
) -> None:
    behind_stray = (
        RECEIVED_LINE + b"Subject: a broken client\r\nthis line has no colon\r\n"
        b"Message-ID: <stray@example.org>\r\nDate: Mon, 2 Sep 2024 09:00:00 +0000\r\n\r\nbody\r\n"
    )
    absurd_date = (
        RECEIVED_LINE + b"Message-ID: <absurd@example.org>\r\n"
        b"Date: Fri, 1 Jan 2099 00:00:00 +0000\r\n\r\nbody\r\n"
    )
    stray_then_date = (
        b"Message-ID: <dated@example.org>\r\nSubject: x\r\nnot a field\r\n"
        b"Date: Sun, 1 Sep 2024 08:00:00 +0000\r\n\r\nbody\r\n"
    )
    messages = [behind_stray, absurd_date, stray_then_date]
    status, target = copy_over_pop3("pop3-dates", messages)

    assert status.state is MailboxState.SYNCED, status
    dates = {
        s.sha256: s.internaldate.astimezone(UTC)
        for s in snapshot(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)["INBOX"]
    }
    # The arrival time: the newest Received; without one, the Date field, read past a
    # line the email package stops at.  Never the time of the copy.
    assert dates == {
        digest(behind_stray): RECEIVED,
        digest(absurd_date): RECEIVED,
        digest(stray_then_date): datetime(2024, 9, 1, 8, 0, tzinfo=UTC),
    }
    exactly_once(
        {"INBOX": Counter(digest(m) for m in messages)},
        stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context),
    )

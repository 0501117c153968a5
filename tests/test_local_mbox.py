"""mbox as a source: From_ lines and their dates, mboxrd and mboxo escaping, status fields
as flags, LF and CRLF files, Thunderbird and Apple Mail trees, ids stable across runs, and
a big file indexed in little memory."""

from __future__ import annotations

import io
import tracemalloc
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from localtrees import (
    LocalMessage,
    corpus_originals,
    mbox_bytes,
    mbox_messages,
    spread,
    write_thunderbird,
)

from migrator.connectors.local import mbox, mboxtree
from migrator.connectors.local.mboxsource import MboxSource
from migrator.connectors.local.settings import LocalSettings, MboxFormat
from migrator.errors import PermanentError, TransientError
from migrator.model import Credentials, MailboxJob, ServerAddress, TlsMode
from migrator.plan import MessageRef
from migrator.secrets import Secret

MBOXRD, MBOXO = MboxFormat.MBOXRD, MboxFormat.MBOXO
WHEN = datetime(2020, 2, 3, 4, 5, 6, tzinfo=UTC)


def source_at(root: Path, relative: str, fmt: MboxFormat = MBOXRD) -> MboxSource:
    job = MailboxJob(
        line=3,
        source_identity="jdoe@example.com",
        source_server=ServerAddress(str(root / relative), 0, TlsMode.IMPLICIT, "mbox"),
        source_credentials=Credentials("", Secret("")),
        source_root_folder=None,
        target_identity="jdoe@example.com",
    )
    return MboxSource(job, LocalSettings(root=str(root), mbox_format=fmt))


def read_all(source: MboxSource) -> dict[str, list[tuple[MessageRef, bytes]]]:
    try:
        return {f.name: list(source.fetch(source.list_messages(f))) for f in source.list_folders()}
    finally:
        source.close()


def index(data: bytes, fmt: MboxFormat = MBOXRD) -> list[tuple[mbox.MboxEntry, bytes]]:
    return list(mbox.index_mbox(io.BytesIO(data), fmt))


def messages_of(data: bytes, fmt: MboxFormat = MBOXRD) -> list[bytes]:
    return [mbox.unescape(data[e.start : e.end], fmt) for e, _ in index(data, fmt)]


# -- From_ lines ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"From - Mon Jun  3 12:50:27 1996\n", datetime(1996, 6, 3, 12, 50, 27, tzinfo=UTC)),
        (b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\r\n",
         datetime(2011, 7, 8, 12, 8, 34, tzinfo=UTC)),
        (b"From jdoe@example.com Sat Jan 03 01:05:34 1996 +0100\n",
         datetime(1996, 1, 3, 1, 5, 34, tzinfo=timezone(timedelta(hours=1)))),
        (b"From a@b Mon Jun 3 12:50:27 PDT 1996\n",
         datetime(1996, 6, 3, 12, 50, 27, tzinfo=timezone(timedelta(hours=-7)))),
        (b"From a@b Mon Jun 3 12:50 1996\n", datetime(1996, 6, 3, 12, 50, tzinfo=UTC)),
        (b"From user@domain  Fri Feb 22 17:06:23 2008\n",
         datetime(2008, 2, 22, 17, 6, 23, tzinfo=UTC)),
        (b"From - \n", None),  # Thunderbird, at times
        (b"From - Mon Foo  3 12:50:27 1996\n", None),
        (b"From - Mon Feb 31 12:50:27 1996\n", None),
    ],
)  # fmt: skip
def test_the_from_line_date(line: bytes, expected: datetime | None) -> None:
    assert mbox.from_line_date(line) == expected


# -- escaping -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "in_file", "message"),
    [
        (MBOXRD, b">From here\n", b"From here\n"),
        (MBOXRD, b">>From here\n", b">From here\n"),
        (MBOXRD, b">>>From here\n", b">>From here\n"),
        (MBOXRD, b"> From here\n", b"> From here\n"),  # not an escape
        (MBOXRD, b"x\n>From a\r\n>>From b\r\n", b"x\nFrom a\r\n>From b\r\n"),
        (MBOXO, b">From here\n", b"From here\n"),
        (MBOXO, b">>From here\n", b">>From here\n"),  # mboxo escaped "From " only
        (MBOXRD, b"a >From b\n", b"a >From b\n"),  # only at the start of a line
    ],
)  # fmt: skip
def test_unescaping(fmt: MboxFormat, in_file: bytes, message: bytes) -> None:
    assert mbox.unescape(in_file, fmt) == message


def test_mboxrd_round_trips_any_line_and_mboxo_is_ambiguous() -> None:
    original = b"Subject: x\n\nFrom a\n>From b\n>>From c\n"
    assert mbox.unescape(mbox.escape(original, MBOXRD), MBOXRD) == original
    assert (
        mbox.unescape(mbox.escape(original, MBOXO), MBOXO)
        == b"Subject: x\n\nFrom a\nFrom b\n>>From c\n"
    )


# -- splitting ------------------------------------------------------------------------------


def test_messages_end_without_their_separator_and_keep_every_other_byte() -> None:
    data = (
        b"From a Mon Jun  3 12:50:27 1996\nSubject: 1\n\none\n>From the body\n\n"
        b"From b Mon Jun  3 12:50:28 1996\nSubject: 2\n\ntwo\n\n\n"  # its own empty line, kept
        b"From c Mon Jun  3 12:50:29 1996\nSubject: 3\n\nno separator\n"
        b"From d Mon Jun  3 12:50:30 1996\nSubject: 4\n\nlast\n\n"
    )
    assert messages_of(data) == [
        b"Subject: 1\n\none\nFrom the body\n",
        b"Subject: 2\n\ntwo\n\n",
        b"Subject: 3\n\nno separator\n",
        b"Subject: 4\n\nlast\n",
    ]
    entries = [e for e, _ in index(data)]
    assert [e.size for e in entries] == [len(m) for m in messages_of(data)]
    assert entries[0].escaped == 1


def test_crlf_files_and_a_byte_order_mark_read_alike() -> None:
    data = (
        b"\xef\xbb\xbfFrom a Mon Jun  3 12:50:27 1996\r\nSubject: 1\r\n\r\n>From x\r\n\r\n"
        b"From b Mon Jun  3 12:50:28 1996\r\nSubject: 2\r\n\r\ny\r\n\r\n"
    )
    assert messages_of(data) == [b"Subject: 1\r\n\r\nFrom x\r\n", b"Subject: 2\r\n\r\ny\r\n"]
    heads = [head for _, head in index(data)]
    assert heads == [b"Subject: 1\r\n\r\n", b"Subject: 2\r\n\r\n"]


def test_an_unescaped_from_line_starts_a_message_as_the_format_says() -> None:
    data = b"From a Mon Jun  3 12:50:27 1996\nSubject: 1\n\nmy film:\n\nFrom Russia with love\n"
    assert messages_of(data) == [b"Subject: 1\n\nmy film:\n", b""]


def test_a_file_that_is_not_mbox_is_refused() -> None:
    with pytest.raises(mbox.NotAnMbox):
        index(b"\nSubject: no From_ line\n\nbody\n")
    assert index(b"") == [] and index(b"\n\n") == []


# -- status fields --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "flags"),
    [
        (b"Status: RO\n", ("\\Seen",)),
        (b"Status: O\n", ()),
        (b"Status: RO\nX-Status: AF\n", ("\\Seen", "\\Answered", "\\Flagged")),
        (b"X-Status: TD\n", ("\\Draft", "\\Deleted")),
        (b"X-Mozilla-Status: 0005\n", ("\\Seen", "\\Flagged")),
        (b"X-Mozilla-Status: 000a\n", ("\\Answered", "\\Deleted")),
        (b"X-Mozilla-Status: zz\n", ()),
        (b"X-Keywords: $Label1, Work bad(word\n", ("$Label1", "Work")),
        (b"X-Mozilla-Keys: $label2                    \n", ("$label2",)),
        (b"Status: RO\nStatus: R\nX-Mozilla-Status: 0001\n", ("\\Seen",)),
    ],
)
def test_status_fields_become_flags(fields: bytes, flags: tuple[str, ...]) -> None:
    assert mbox.status_flags(b"Subject: x\n" + fields + b"\nStatus: RO body, not a field\n") == (
        flags
    )


def test_the_stable_key_ignores_the_fields_a_client_rewrites() -> None:
    head = b"Subject: x\nMessage-ID: <1@x>\n\n"
    flagged = (
        b"Subject: x\nX-Mozilla-Status: 0005\nStatus: RO\nX-Keywords: a\n b\nMessage-ID: <1@x>\n\n"
    )
    assert mbox.stable_key(head) == mbox.stable_key(flagged)
    assert mbox.stable_key(head) == mbox.stable_key(head.replace(b"\n", b"\r\n"))
    assert mbox.stable_key(head) != mbox.stable_key(b"Subject: y\nMessage-ID: <1@x>\n\n")


# -- the source -----------------------------------------------------------------------------


def test_an_mbox_file_is_the_inbox_with_flags_dates_and_bytes(tmp_path: Path) -> None:
    original = b"Subject: a\nMessage-ID: <a@x>\n\nFrom me\n>From you\n"
    messages = mbox_messages(
        [
            LocalMessage("INBOX", original, WHEN, ("\\Seen", "\\Answered")),
            LocalMessage("INBOX", b"Subject: b\n\nb\n", WHEN - timedelta(days=1)),
        ]
    )
    (tmp_path / "box.mbox").write_bytes(mbox_bytes(messages))

    (folder, read), *_ = read_all(source_at(tmp_path, "box.mbox")).items()

    assert folder == "INBOX"
    assert [data for _, data in read] == [m.raw for m in messages]
    first, second = (ref for ref, _ in read)
    assert first.flags == ("\\Seen", "\\Answered") and second.flags == ()
    assert (first.internaldate, second.internaldate) == (WHEN, WHEN - timedelta(days=1))
    assert first.size == len(messages[0].raw) and first.message_id == "<a@x>"


def test_ids_are_the_same_on_every_run_and_after_flags_change_or_compaction(
    tmp_path: Path,
) -> None:
    twin = b"Subject: same\n\nsame\n"
    messages = [LocalMessage("INBOX", raw, WHEN) for raw in (b"Subject: 1\n\n1\n", twin, twin)]
    path = tmp_path / "box.mbox"
    path.write_bytes(mbox_bytes(messages))
    first = [ref.uid for ref, _ in read_all(source_at(tmp_path, "box.mbox"))["INBOX"]]
    again = [ref.uid for ref, _ in read_all(source_at(tmp_path, "box.mbox"))["INBOX"]]
    assert first == again and len(set(first)) == 3

    # The first message is deleted and compacted away, the others read: offsets move.
    read = [LocalMessage("INBOX", b"Status: RO\n" + twin, WHEN)] * 2
    path.write_bytes(mbox_bytes(read))
    assert [ref.uid for ref, _ in read_all(source_at(tmp_path, "box.mbox"))["INBOX"]] == first[1:]


def test_a_file_changed_after_listing_is_listed_again_not_read_at_old_offsets(
    tmp_path: Path,
) -> None:
    path = tmp_path / "box.mbox"
    path.write_bytes(mbox_bytes([LocalMessage("INBOX", b"Subject: 1\n\n1\n", WHEN)]))
    source = source_at(tmp_path, "box.mbox")
    (folder,) = source.list_folders()
    refs = source.list_messages(folder)
    with path.open("ab") as handle:  # a client delivers meanwhile
        handle.write(mbox_bytes([LocalMessage("INBOX", b"Subject: 2\n\n2\n", WHEN)]))
    with pytest.raises(TransientError, match="changed since it was listed"):
        list(source.fetch(refs))
    source.close()


def test_a_thunderbird_directory_is_a_folder_tree(tmp_path: Path) -> None:
    messages = [
        LocalMessage(folder, f"Subject: {folder}\n\n{folder}\n".encode(), WHEN)
        for folder in ("INBOX", "Sent", "Archive", "Archive/2019", "Archive/2019/Q1")
    ]
    write_thunderbird(tmp_path / "profile", messages, crlf_folders=["Sent"])
    (tmp_path / "profile" / "Trash").write_bytes(b"")  # an empty folder
    (tmp_path / "profile" / "Outbox.sbd").mkdir()  # subfolders of a folder with no file

    read = read_all(source_at(tmp_path, "profile"))

    assert list(read) == ["Archive", "Archive/2019", "Archive/2019/Q1", "Inbox", "Sent", "Trash"]
    assert read["Sent"][0][1] == b"Subject: Sent\r\n\r\nSent\r\n"
    assert read["Archive/2019/Q1"][0][1] == b"Subject: Archive/2019/Q1\n\nArchive/2019/Q1\n"
    assert read["Trash"] == []


def test_an_apple_mail_export_is_a_folder_tree(tmp_path: Path) -> None:
    top = tmp_path / "export" / "Work.mbox"
    (top / "Clients.mbox").mkdir(parents=True)
    (top / "mbox").write_bytes(mbox_bytes([LocalMessage("x", b"Subject: w\n\nw\n", WHEN)]))
    (top / "Clients.mbox" / "mbox").write_bytes(
        mbox_bytes([LocalMessage("x", b"Subject: c\n\nc\n", WHEN)])
    )
    (top / "Info.plist").write_bytes(b"<?xml version='1.0'?><plist/>")
    (top / "table_of_contents").write_bytes(b"\x00\x01binary")

    folders = mboxtree.find_folders(str(tmp_path / "export"))

    assert [f.path for f in folders] == [("Work",), ("Work", "Clients")]


def test_the_corpus_reads_back_byte_for_byte_from_an_mboxrd_file(tmp_path: Path) -> None:
    messages = mbox_messages(spread([raw for _, raw in corpus_originals()], ["INBOX"]))
    assert any(b"\nFrom " in m.raw for m in messages)  # unescaped body lines, escaped here
    assert any(b"\n>From " in m.raw for m in messages)  # and lines already quoted
    (tmp_path / "corpus.mbox").write_bytes(mbox_bytes(messages))

    read = read_all(source_at(tmp_path, "corpus.mbox"))["INBOX"]

    assert [data for _, data in read] == [m.raw for m in messages]
    assert [ref.size for ref, _ in read] == [m.size for m in messages]
    assert [ref.internaldate for ref, _ in read] == [m.date for m in messages]


def test_a_file_that_is_not_mbox_fails_the_mailbox(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_bytes(b"Dear diary\n")
    with pytest.raises(PermanentError, match=r"line 3, .*notes.txt is not an mbox file"):
        source_at(tmp_path, "notes.txt").list_folders()


def test_a_big_file_is_indexed_in_little_memory(tmp_path: Path) -> None:
    body = b"".join(
        b"line %d of a long message body, quite ordinary text\n" % i for i in range(200)
    )
    one = b"From a Mon Jun  3 12:50:27 1996\nSubject: big\n\n" + body + b"\n"
    path = tmp_path / "big.mbox"
    with path.open("wb") as handle:
        for _ in range(2_000):  # some 20 MB
            handle.write(one)
    tracemalloc.start()
    try:
        with path.open("rb") as handle:
            count = sum(1 for _ in mbox.index_mbox(handle, MBOXRD))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 2_000
    assert peak < 3 * 1024 * 1024, peak  # the index, never the file

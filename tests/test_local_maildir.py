"""Maildir as a source: file names and flags, the folders of a tree, ids that survive a
rename, dates from the files."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from localtrees import LocalMessage, write_maildir

from migrator.connectors.local import maildir
from migrator.connectors.local.maildirsource import MaildirSource
from migrator.connectors.local.settings import LocalSettings
from migrator.errors import PermanentError
from migrator.model import Credentials, MailboxJob, ServerAddress, TlsMode
from migrator.plan import MessageRef
from migrator.secrets import Secret

WHEN = datetime(2019, 5, 6, 7, 8, 9, tzinfo=UTC)


def source_at(root: Path, relative: str = "box") -> MaildirSource:
    job = MailboxJob(
        line=2,
        source_identity="jdoe@example.com",
        source_server=ServerAddress(str(root / relative), 0, TlsMode.IMPLICIT, "maildir"),
        source_credentials=Credentials("", Secret("")),
        source_root_folder=None,
        target_identity="jdoe@example.com",
    )
    return MaildirSource(job, LocalSettings(root=str(root)))


def listing(source: MaildirSource) -> dict[str, list[MessageRef]]:
    return {f.name: source.list_messages(f) for f in source.list_folders()}


@pytest.mark.parametrize(
    ("name", "unique", "flags"),
    [
        ("1500.M1P2.host,S=42:2,S", "1500.M1P2.host,S=42", ("\\Seen",)),
        ("1500.M1P2.host:2,DFRST", "1500.M1P2.host", ("\\Draft", "\\Flagged", "\\Answered",
                                                       "\\Seen", "\\Deleted")),
        ("1500.M1P2.host:2,", "1500.M1P2.host", ()),
        ("1500.M1P2.host", "1500.M1P2.host", ()),  # new/: no info yet
        ("1500.M1P2.host:2,PS", "1500.M1P2.host", ("\\Seen",)),  # P (passed) has no flag
        ("1500.M1P2.host:1,S", "1500.M1P2.host", ()),  # an info of another version
        ("1500.M1P2.host:2,Sab", "1500.M1P2.host", ("\\Seen", "$Label1", "Work")),
        ("1500.M1P2.host:2,Sz", "1500.M1P2.host", ("\\Seen",)),  # a letter with no keyword
    ],
)  # fmt: skip
def test_a_file_name_gives_its_unique_part_and_flags(
    name: str, unique: str, flags: tuple[str, ...]
) -> None:
    assert maildir.parse_name(name, {"a": "$Label1", "b": "Work"}) == (unique, flags)


def test_dovecot_keywords_number_the_keyword_letters() -> None:
    text = "0 $Label1\n1 Work\n2 bad(word\n27 TooFar\nx NoNumber\n3 $Junk\n"
    assert maildir.parse_keywords(text) == {"a": "$Label1", "b": "Work", "d": "$Junk"}


@pytest.mark.parametrize(
    ("on_disk", "name"),
    [
        ("Entw&APw-rfe", "Entwürfe"),
        ("&ZeVnLIqe-", "日本語"),
        ("Tom &- Jerry", "Tom & Jerry"),
        ("Plain", "Plain"),
        ("Broken &Zz", "Broken &Zz"),  # no "-": not modified UTF-7, kept as it is
        ("Odd &!!!-", "Odd &!!!-"),  # not base64: kept
    ],
)
def test_folder_names_are_decoded_from_modified_utf7(on_disk: str, name: str) -> None:
    assert maildir.decode_folder_name(on_disk) == name


def _mail(path: Path, data: bytes = b"Subject: x\n\nbody\n", when: datetime = WHEN) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def test_folders_come_from_maildirplusplus_and_nested_directories(tmp_path: Path) -> None:
    box = tmp_path / "box"
    _mail(box / "cur" / "1.a:2,S")
    _mail(box / ".Sent" / "cur" / "2.a:2,S")
    _mail(box / ".Archive.2019" / "new" / "3.a")  # tmp/ missing, as archives drop it
    _mail(box / ".Entw&APw-rfe" / "cur" / "4.a:2,")
    _mail(box / "Projects" / "Q1" / "cur" / "5.a:2,F")  # LAYOUT=fs: no mail at Projects
    _mail(box / "Lists" / "cur" / "6.a:2,")
    _mail(box / "Lists" / "Dev" / "new" / "7.a")
    (box / ".Empty" / "tmp").mkdir(parents=True)  # neither cur/ nor new/: not a folder
    (box / "dovecot-uidlist").write_text("3 V1 N2\n")

    folders = source_at(tmp_path).list_folders()

    assert [(f.name, f.path) for f in folders] == [
        ("INBOX", ("INBOX",)),
        ("Archive/2019", ("Archive", "2019")),
        ("Entwürfe", ("Entwürfe",)),
        ("Sent", ("Sent",)),
        ("Lists", ("Lists",)),
        ("Lists/Dev", ("Lists", "Dev")),
        ("Projects/Q1", ("Projects", "Q1")),
    ]


def test_each_message_keeps_its_flags_date_and_bytes(tmp_path: Path) -> None:
    box = tmp_path / "box"
    seen = _mail(box / "cur" / "100.M1.h,S=40:2,FS", b"Subject: seen\nMessage-ID: <a@x>\n\nA\n")
    fresh = _mail(box / "new" / "101.M2.h", b"Subject: new\n\nB\n")
    odd = _mail(box / "new" / "102.M3.h:2,S", b"Subject: odd\n\nC\n")  # new/ is unseen
    _mail(box / "cur" / ".hidden:2,S")  # not a message (the Maildir rule)
    (box / "cur" / "linked:2,S").symlink_to(seen)  # links are not followed

    source = source_at(tmp_path)
    (refs,) = listing(source).values()

    by_subject = {data.split(b"\n")[0]: (ref, data) for ref, data in source.fetch(refs)}
    assert set(by_subject) == {b"Subject: seen", b"Subject: new", b"Subject: odd"}
    ref, data = by_subject[b"Subject: seen"]
    assert data == seen.read_bytes() and ref.size == len(data)
    assert set(ref.flags) == {"\\Seen", "\\Flagged"}
    assert ref.internaldate == WHEN and ref.message_id == "<a@x>"
    assert by_subject[b"Subject: new"][0].flags == ()
    assert by_subject[b"Subject: odd"][0].flags == ()
    assert fresh.exists() and odd.exists()  # nothing is moved or written


def test_uids_survive_a_rename_and_a_file_renamed_after_listing_is_still_read(
    tmp_path: Path,
) -> None:
    box = tmp_path / "box"
    first = _mail(box / "cur" / "100.M1.h,S=9:2,")
    _mail(box / "cur" / "101.M2.h,S=9:2,S", b"Subject: y\n\nother\n")
    source = source_at(tmp_path)
    before = {r.uid for r in listing(source)["INBOX"]}

    # A client reads the message: its file is renamed with the S flag.
    renamed = first.rename(first.with_name("100.M1.h,S=9:2,S"))
    fetched = dict(source.fetch(listing(source)["INBOX"]))  # listed again: the same ids
    assert {r.uid for r in fetched} == before

    renamed.rename(renamed.with_name("100.M1.h,S=9:2,RS"))  # and again, after this listing
    again = dict(source.fetch(list(fetched)))
    assert len(again) == 2 and set(again.values()) == set(fetched.values())
    assert {r.uid for r in listing(source_at(tmp_path))["INBOX"]} == before  # another run


def test_a_message_gone_since_listing_is_left_out_not_an_error(tmp_path: Path) -> None:
    box = tmp_path / "box"
    gone = _mail(box / "cur" / "100.M1.h:2,S")
    _mail(box / "cur" / "101.M2.h:2,S", b"Subject: y\n\nstays\n")
    source = source_at(tmp_path)
    refs = listing(source)["INBOX"]
    gone.unlink()
    assert [data for _, data in source.fetch(refs)] == [b"Subject: y\n\nstays\n"]


def test_an_absurd_mtime_gives_way_to_the_received_date(tmp_path: Path) -> None:
    received = b"Received: from a by b; Tue, 3 Mar 2015 10:00:00 +0000\nDate: Mon, 2 Mar 2015"
    _mail(tmp_path / "box" / "cur" / "1.x:2,S", received + b" 09:00:00 +0000\n\nx\n",
          datetime(1970, 1, 2, tzinfo=UTC))  # fmt: skip
    _mail(tmp_path / "box" / "cur" / "2.x:2,S", b"Subject: no dates\n\ny\n",
          datetime(1970, 1, 2, tzinfo=UTC))  # fmt: skip
    now = datetime.now(UTC)
    refs = sorted(listing(source_at(tmp_path))["INBOX"], key=lambda r: r.size)

    dated, undated = refs[1], refs[0]
    assert dated.internaldate is None  # the copy takes the Received date instead
    assert dated.append_date(now) == datetime(2015, 3, 3, 10, 0, tzinfo=UTC)
    assert undated.internaldate == datetime(1970, 1, 2, tzinfo=UTC)  # nothing better


def test_heads_are_the_header_blocks(tmp_path: Path) -> None:
    _mail(tmp_path / "box" / "cur" / "1.x:2,S", b"Subject: a\r\nX: y\r\n\r\nbody\r\n")
    _mail(tmp_path / "box" / "cur" / "2.x:2,S", b"Subject: all header\n")
    source = source_at(tmp_path)
    heads = sorted(data for _, data in source.heads(listing(source)["INBOX"]))
    assert heads == [b"Subject: a\r\nX: y\r\n\r\n", b"Subject: all header\n"]


def test_a_second_session_reads_what_the_first_listed(tmp_path: Path) -> None:
    messages = [
        LocalMessage("INBOX", f"Subject: {i}\n\n{i}\n".encode(), WHEN, ("\\Seen",))
        for i in range(5)
    ] + [LocalMessage("Sent", b"Subject: s\n\ns\n", WHEN)]
    write_maildir(tmp_path / "box", messages)
    source = source_at(tmp_path)
    refs = [r for rs in listing(source).values() for r in rs]
    other = source.session()
    assert {d for _, d in other.fetch(refs)} == {m.raw for m in messages}


def test_not_a_maildir_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "box" / "junk").mkdir(parents=True)
    with pytest.raises(PermanentError, match=r"line 2, .*box is not a Maildir"):
        source_at(tmp_path).list_folders()
    (tmp_path / "file").write_bytes(b"From x\n")
    with pytest.raises(PermanentError, match=r"is not a directory.*--source-type mbox"):
        source_at(tmp_path, "file")

"""Bad input: real-world broken mail, hostile CSV and folder maps, hostile folder names, and
folder names the target refuses."""

from __future__ import annotations

import codecs
import re
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
from celerykit import cli
from corpus import corpus_messages
from faultkit import ExactlyOnce, digest, expected_at_target, run_options, stored
from imapclient import IMAPClient
from servers.certs import TlsFiles
from servers.dovecot import DEFAULT_USER_PASSWORD, MASTER_PASSWORD, DovecotServer, MakeUser
from servers.mailgen import Fill
from support import CopyMailbox, batch_password, batch_text

from migrator.connectors.imap.target import ImapTarget
from migrator.copier import CopyOptions, migrate_mailbox
from migrator.foldermap import default_folder_map, safe_subpath
from migrator.plan import MessageRef
from migrator.report import MailboxState
from migrator.sources.base import SourceFolder
from migrator.state import StateStore

# -- the corpus ---------------------------------------------------------------------------


def _as_dovecot_stores(raw: bytes) -> bytes:
    """What Dovecot gives back for an APPENDed message: every bare LF (and lone CR) as CRLF
    (it stores lines, and IMAP sends CRLF), and NUL as 0x80 (RFC 3501 forbids NUL in a
    literal; Dovecot replaces it rather than refuse the message)."""
    return re.sub(rb"\r\n|\r|\n", b"\r\n", raw).replace(b"\0", b"\x80")


def test_every_corpus_message_arrives_byte_identical(
    dovecot: DovecotServer,
    make_user: MakeUser,
    fill: Fill,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    exactly_once: ExactlyOnce,
) -> None:
    messages = corpus_messages()
    # The corpus has no NUL byte yet; one message of our own covers it.
    messages.append(("synthetic-nul.eml", b"Subject: nul\r\nMessage-ID: <nul@x>\r\n\r\na\0b\r\n"))
    password = batch_password("corpus")
    source, target = make_user(password), make_user()
    fill.append(source, "INBOX", [(raw, ("\\Seen",), None) for _name, raw in messages], password)
    source_view = stored(dovecot, source, password, ssl_context)
    # Dovecot took every one, and changed only line ends and NUL bytes.
    assert sorted(map(digest, source_view["INBOX"])) == sorted(
        digest(_as_dovecot_stores(raw)) for _name, raw in messages
    )

    status = copy_mailbox(source, target, password=password, batch_id="corpus")

    assert status.state is MailboxState.SYNCED, status
    assert status.skipped_messages == 0
    assert status.done_messages == len(messages)
    # Source as stored and target as stored: the same bytes, each message once.
    exactly_once(
        expected_at_target(source_view),
        stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context),
    )


# -- CSV files ----------------------------------------------------------------------------


@pytest.fixture
def enqueue_env(
    redis_url: str, celery_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[redis.Redis]:
    monkeypatch.setenv("MIGRATOR_TARGET_ADMIN_PASSWORD", MASTER_PASSWORD)
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def _enqueue(csv: Path, *extra: str) -> int:
    code, _ = cli(
        ["enqueue", str(csv), "--method", "individual", "--target-server",
         "imaps://127.0.0.1:1", "--target-admin", "admin", *extra]
    )  # fmt: skip
    return code


def _row(i: int, password: str, **over: str) -> dict[str, str]:
    row = {
        "SourceIdentity": f"user{i}@example.test",
        "SourceServer": "imaps://127.0.0.1:1",
        "SourceLoginID": f"user{i}@example.test",
        "SourcePassword": password,
        "TargetIdentity": f"user{i}@example.test",
    }
    row.update(over)
    return row


def _csv_cases(password: str) -> dict[str, tuple[bytes, str]]:
    good = [_row(i, password) for i in range(1, 4)]
    many = [_row(i, password) for i in range(1, 100_001)]
    many[-1] = _row(100_000, password, SourceServer="not a server")
    return {
        "latin-1": (
            # The password's euro sign and CJK have no Latin-1 byte: "?" stands in for them.
            batch_text([_row(1, password, SourceIdentity="jörg@example.test")]).encode(
                "latin-1", "replace"
            ),
            "is not UTF-8: line 2 has the byte 0xF6",
        ),
        "utf-16": (
            codecs.BOM_UTF16_LE + batch_text(good).encode("utf-16-le"),
            "it looks like UTF-16",
        ),
        "formula": (
            batch_text([*good, _row(9, password, SourceIdentity="=cmd|' /C calc'!A0")]).encode(),
            "line 5, column SourceIdentity: starts with '='",
        ),
        "100k-rows": (batch_text(many).encode(), "line 100001, column SourceServer"),
        "embedded-newline": (
            batch_text([*good, _row(9, password, SourceIdentity="a\nb@example.test")]).encode(),
            "line 5, column SourceIdentity",
        ),
        "open-quote": (
            batch_text(good).encode() + b'"user9@example.test,imaps://x,u,pw,t\r\n',
            "not valid CSV",
        ),
        "missing-columns": (
            b"SourceIdentity,SourceServer\r\nuser1@example.test,imaps://127.0.0.1:1\r\n",
            "the header has no column SourceLoginID",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["latin-1", "utf-16", "formula", "100k-rows", "embedded-newline", "open-quote",
     "missing-columns"],
)  # fmt: skip
def test_bad_csv_is_refused_clearly_and_nothing_is_enqueued(
    enqueue_env: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
) -> None:
    password = batch_password(f"csv-{case}")
    data, words = _csv_cases(password)[case]
    csv = tmp_path / "batch.csv"
    csv.write_bytes(data)

    assert _enqueue(csv) == 2
    err = capsys.readouterr().err
    assert words in " ".join(err.split()), err[-2000:]
    assert password not in err
    assert enqueue_env.dbsize() == 0  # no batch, no job, no Celery message


# -- folder maps --------------------------------------------------------------------------


class _Listener:
    """A TCP port that records whether anything connected (a DTD or entity fetch)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connected = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connected = True
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.mark.parametrize("kind", ["external-file", "billion-laughs", "dtd-network", "deep"])
def test_hostile_foldermap_is_refused_by_enqueue_with_nothing_read_or_enqueued(
    enqueue_env: redis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-MARKER-7781")
    listener = _Listener()
    entities = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10 if i else "lol"}">' for i in range(10))
    xml = {
        "external-file": f'<?xml version="1.0"?><!DOCTYPE FolderMap [<!ENTITY x SYSTEM '
        f'"file://{secret}">]><FolderMap><Folder path="&x;"><Property Name="a"/></Folder>'
        "</FolderMap>",
        "billion-laughs": f'<?xml version="1.0"?><!DOCTYPE FolderMap [{entities}]>'
        '<FolderMap><Folder path="&l9;"><Property Name="&l9;"/></Folder></FolderMap>',
        "dtd-network": f'<?xml version="1.0"?><!DOCTYPE FolderMap SYSTEM '
        f'"http://127.0.0.1:{listener.port}/x.dtd"><FolderMap/>',
        "deep": '<?xml version="1.0"?><FolderMap>' + "<a>" * 5000 + "</a>" * 5000 + "</FolderMap>",
    }[kind]
    foldermap = tmp_path / "hostile.xml"
    foldermap.write_text(xml)
    password = batch_password(f"map-{kind}")
    csv = tmp_path / "batch.csv"
    csv.write_text(batch_text([_row(1, password)]))

    try:
        assert _enqueue(csv, "--foldermap", str(foldermap)) == 2
    finally:
        listener.close()
    err = capsys.readouterr().err
    assert "hostile.xml" in err and "error" in err
    assert "TOP-SECRET-MARKER" not in err
    assert not listener.connected
    assert enqueue_env.dbsize() == 0


# -- folder names -------------------------------------------------------------------------

# Names Dovecot refuses to create (so no source can hold them here), with its reason.
REFUSED_BY_DOVECOT = {
    "..": "Contains '..' part",
    "a/../b": "Contains '..' part",
    "/leading": "Begins with hierarchy separator",
    "ctl\x01char": "Control characters not allowed",
    "tab\there": "Control characters not allowed",
    "x//y": "Has adjacent hierarchy separators",
    "/".join(f"d{i}" for i in range(1000)): "Mailbox name too long",
}
# Names it takes: dots, wildcards, spaces, non-ASCII, a leading dot, 60 levels deep.
ODD_BUT_ALLOWED = [
    "a.b",
    ".hidden",
    "*star",
    "%percent",
    "trailing space ",
    "Ünïcødé/日本",
    "back\\slash",
    "/".join(f"L{i}" for i in range(60)),
]


def test_odd_folder_names_land_inside_the_target_mailbox_once_each(
    dovecot: DovecotServer,
    make_user: MakeUser,
    copy_mailbox: CopyMailbox,
    ssl_context: ssl.SSLContext,
    exactly_once: ExactlyOnce,
) -> None:
    password = batch_password("folders")
    source, target = make_user(password), make_user()
    with IMAPClient("127.0.0.1", dovecot.imaps_port, ssl_context=ssl_context) as client:
        client.plain_login(source, password)
        for name, reason in REFUSED_BY_DOVECOT.items():
            with pytest.raises(Exception, match=re.escape(reason)):
                client.create_folder(name)
        for index, name in enumerate(ODD_BUT_ALLOWED):
            parts = name.split("/")
            for depth in range(1, len(parts) + 1):
                if not client.folder_exists("/".join(parts[:depth])):
                    client.create_folder("/".join(parts[:depth]))
            client.append(
                name,
                f"Subject: {index}\r\nMessage-ID: <f{index}@x>\r\n\r\nbody {index}\r\n".encode(),
            )
    homes_before = {p.name for p in dovecot.mail_dir.iterdir()}

    status = copy_mailbox(source, target, password=password, batch_id="folders")

    assert status.state is MailboxState.SYNCED, status
    assert status.done_messages == len(ODD_BUT_ALLOWED)
    # Nothing was created beside the users' own homes (the target's appears at its first login).
    assert {p.name for p in dovecot.mail_dir.iterdir()} - homes_before <= {target}
    target_view = stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    assert {n for n, b in target_view.items() if b} == set(ODD_BUT_ALLOWED)
    exactly_once(
        expected_at_target(stored(dovecot, source, password, ssl_context), lambda name: name),
        target_view,
    )


# Names Dovecot cannot hold, so no Dovecot source has them, but an Exchange mailbox or another
# IMAP server can (RFC 3501 allows any octet but NUL in a name): a source of our own holds
# them, as its levels (`SourceFolder.path`) after the source's own delimiter is taken away.
HOSTILE_PATHS: list[tuple[str, ...]] = [
    ("a/b",),  # the target's delimiter inside a name ...
    ("a", "b"),  # ... is not the folder b inside a
    ("a_b",),  # what the old mapping made of "a/b"
    ("..",),
    (".",),
    ("", "leading"),  # "/leading" at a source whose delimiter is "/"
    ("/leading",),  # the same name at a source whose delimiter is not
    ("x", "", "y"),  # "x//y"
    ("ctl\x01char",),
    ("tab\there",),
    ("~home",),
    ("%2F",),
    ("日" * 100,),  # too long for Dovecot as modified UTF-7
    # 1,000 levels, and some levels on the way (the others are \Noselect at the source):
    # around the 64 the target keeps, and the path length that folds more of them.
    *(tuple(f"d{i}" for i in range(depth)) for depth in (10, 63, 64, 65, 66, 250, 999, 1000)),
]
RESERVED_BY_DOVECOT = ("dbox-Mails",)  # its own file name: still refused, whatever we do


class HostileFolders:
    """Our MailboxSource (in memory): the folders above, two messages in each."""

    def __init__(self) -> None:
        self.paths = [*HOSTILE_PATHS, RESERVED_BY_DOVECOT]
        self.bodies: dict[tuple[str, ...], list[bytes]] = {
            path: [
                f"Subject: {n} in {path[-1][:20]!r}\r\nMessage-ID: <f{i}.{n}@x>\r\n\r\n"
                f"body {n} of folder {i}\r\n".encode()
                for n in range(2)
            ]
            for i, path in enumerate(self.paths)
        }

    def list_folders(self) -> list[SourceFolder]:
        return [SourceFolder(_name(path), path) for path in self.paths]

    def list_messages(self, folder: SourceFolder) -> list[MessageRef]:
        return [
            MessageRef(
                folder.name,
                1,
                str(uid),
                len(body),
                datetime(2024, 1, uid, tzinfo=UTC),
                message_id=f"<{folder.name}.{uid}>",
            )
            for uid, body in enumerate(self.bodies[folder.path], start=1)
        ]

    def fetch(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        by_name = {_name(path): bodies for path, bodies in self.bodies.items()}
        for ref in refs:
            yield ref, by_name[ref.folder][int(ref.uid) - 1]

    def heads(self, refs: Sequence[MessageRef]) -> Iterator[tuple[MessageRef, bytes]]:
        return self.fetch(refs)

    def session(self) -> None:
        return None

    def close(self) -> None:
        pass


def _name(path: tuple[str, ...]) -> str:
    return repr(path) if len(path) < 4 else f"d0/.../d{len(path) - 1}"


def _target_name(path: tuple[str, ...]) -> str:
    target = default_folder_map().map(path)
    assert target.special is None
    return "/".join(safe_subpath(target.subpath, "/"))


def test_folder_names_the_target_refuses_are_made_safe_and_a_refused_folder_fails_alone(
    dovecot: DovecotServer,
    make_user: MakeUser,
    ssl_context: ssl.SSLContext,
    tls_files: TlsFiles,
    redis_url: str,
    exactly_once: ExactlyOnce,
) -> None:
    target = make_user()
    options, _ = run_options(dovecot.imaps_port, dovecot.imaps_port, tls_files.ca_cert)
    source = HostileFolders()
    store = StateStore.from_url(redis_url)

    result = migrate_mailbox(
        lambda: source,
        lambda: ImapTarget(
            options.target.server, options.target.credentials(target), target, options.connect
        ),
        default_folder_map(),
        store.progress("hostile", "00001", "hostile-folders"),
        CopyOptions(max_wait=1),
    )

    # Only the folder Dovecot still refuses failed: its mail is named, with the reason.
    assert result.state is MailboxState.DONE, result
    reserved = _name(RESERVED_BY_DOVECOT)
    assert sorted((s.folder, s.uid) for s in result.skipped) == [(reserved, "1"), (reserved, "2")]
    assert all("Contains reserved name" in s.reason for s in result.skipped)
    assert result.error is not None and "dbox-Mails" in result.error
    assert result.copied_messages == result.total_messages - 2 == 2 * len(HOSTILE_PATHS)
    # Every other folder is there once, under a name no other folder has; each holds its
    # own mail and nothing else.
    target_view = stored(dovecot, target, DEFAULT_USER_PASSWORD, ssl_context)
    names = [_target_name(path) for path in HOSTILE_PATHS]
    assert len(set(names)) == len(names)
    assert set(names) <= set(target_view)
    expected = {
        _target_name(path): Counter(digest(b) for b in bodies)
        for path, bodies in source.bodies.items()
        if path != RESERVED_BY_DOVECOT
    }
    exactly_once(expected, target_view)  # type: ignore[operator]

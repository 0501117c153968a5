"""What the end-to-end tests share: batches for the test Dovecot, run options, running one
job in this process (CopyMailbox, the copy_mailbox fixture), a snapshot of a mailbox to
compare source with target, and waiting on a condition with a deadline (eventually)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import secrets
import ssl
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ews_server import EwsServer
from imapclient import IMAPClient
from servers.dovecot import (
    DEFAULT_USER_PASSWORD,
    MASTER_PASSWORD,
    MASTER_USER,
    NON_ASCII_MASTER_PASSWORD,
    DovecotServer,
)
from servers.mailgen import PopulatedMessage

from migrator.batch import AccessMethod, parse_batch, parse_server
from migrator.connectors import connector
from migrator.connectors.ews.settings import EwsAccess, EwsSettings, endpoint_address
from migrator.connectors.imap.target import ImapTarget
from migrator.foldermap import default_folder_map
from migrator.model import AdminLogin, ConnectOptions, MailboxJob
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.rewrite import RewriteMaps
from migrator.runner import execute_job
from migrator.secrets import Secret, SecretBox, new_key
from migrator.state import MailboxStatus, NewJob, StateStore

# Every password a test puts into a batch, so tests/faults can prove that none of them ever
# reaches Redis or a log. batch_password() makes one and registers it.
BATCH_PASSWORDS: set[str] = {MASTER_PASSWORD, DEFAULT_USER_PASSWORD, NON_ASCII_MASTER_PASSWORD}


def batch_password(tag: str) -> str:
    """A unique password for a batch's source login, registered in BATCH_PASSWORDS. Not ASCII
    (Latin-1 letters, a euro sign outside Latin-1, CJK): a password must reach the server as
    UTF-8 and stay out of Redis and the logs in every form it can take on the way."""
    password = f"Pä-{tag}-ü€日本-{secrets.token_hex(6)}!"
    BATCH_PASSWORDS.add(password)
    return password


EWS_ADMIN = "migration-svc@example.com"  # holds ApplicationImpersonation on the test server
EWS_PASSWORD = "ews-secret-Pw1"
BATCH_PASSWORDS.add(EWS_PASSWORD)


def ews_settings(server_url: str | None, **kw: object) -> EwsSettings:
    """An EWS target (or, with None, a source: the endpoint comes from each row) on the test
    server: plain HTTP, our fixed API version."""
    return EwsSettings(
        endpoint=server_url,
        access=EwsAccess.IMPERSONATION if server_url else EwsAccess.DELEGATE,
        version="Exchange2016",
        connect=ConnectOptions(timeout=30, allow_plaintext=True),
        **kw,  # type: ignore[arg-type]
    )


def ews_target_options(server_url: str, ca_file: Path, **kw: object) -> RunOptions:
    """Target: the test EWS server, the service account impersonating each mailbox."""
    settings = ews_settings(server_url)
    return RunOptions(
        target=TargetSpec(
            server=endpoint_address(server_url),
            method=AccessMethod.PROXYAUTH,
            admin=AdminLogin(EWS_ADMIN, Secret(EWS_PASSWORD)),
            kind="ews",
            settings=settings,
        ),
        connect=ConnectOptions(timeout=30, ca_file=str(ca_file), allow_plaintext=True),
        **kw,  # type: ignore[arg-type]
    )


def from_exchange(options: RunOptions) -> RunOptions:
    """`options` with the test EWS server as the source: each row names its endpoint, over
    plain HTTP."""
    return replace(
        options,
        source_kind="ews",
        source_settings=ews_settings(None),
        connect=replace(options.connect, allow_plaintext=True),
    )


COLUMNS = ["SourceIdentity", "SourceServer", "SourceLoginID", "SourcePassword", "TargetIdentity"]


def batch_text(rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


def write_batch(path: Path, rows: list[dict[str, str]], columns: list[str] = COLUMNS) -> Path:
    path.write_text(batch_text(rows, columns), encoding="utf-8")
    return path


def source_row(server_url: str, source: str, password: str, target: str = "") -> dict[str, str]:
    """A batch row for `individual`: the source logs in as itself."""
    return {
        "SourceIdentity": source,
        "SourceServer": server_url,
        "SourceLoginID": source,
        "SourcePassword": password,
        "TargetIdentity": target,
    }


def write_source_batch(path: Path, server_url: str, pairs: list[tuple[str, str, str]]) -> Path:
    """A batch of (source, password, target) rows, every source on `server_url`."""
    return write_batch(path, [source_row(server_url, *pair) for pair in pairs])


def imaps(server: DovecotServer | int) -> str:
    """The SourceServer (or --target-server) of the test Dovecot, or of a port before it."""
    port = server if isinstance(server, int) else server.imaps_port
    return f"imaps://127.0.0.1:{port}"


def pop3s(server: DovecotServer) -> str:
    return f"pop3s://127.0.0.1:{server.pop3s_port}"


def run_options(
    server: DovecotServer | int, ca_file: Path, *, timeout: float = 30, **kw: object
) -> RunOptions:
    """Target: the test Dovecot (or a port before it), reached through the master user with
    SASL PLAIN."""
    return RunOptions(
        target=TargetSpec(
            server=parse_server(imaps(server)),
            method=AccessMethod.PROXYAUTH,
            admin=AdminLogin(MASTER_USER, Secret(MASTER_PASSWORD)),
        ),
        connect=ConnectOptions(timeout=timeout, ca_file=str(ca_file)),
        **kw,  # type: ignore[arg-type]
    )


def imap_target(server: DovecotServer, ca_file: Path, user: str) -> ImapTarget:
    """`user`'s mailbox on the test Dovecot as a migration target, opened as run_options
    opens it (the master user acting for the user)."""
    options = run_options(server, ca_file)
    credentials = options.target.credentials(user)
    return ImapTarget(options.target.server, credentials, user, options.connect)


@contextlib.contextmanager
def user_session(server: DovecotServer, user: str, context: ssl.SSLContext) -> Iterator[IMAPClient]:
    """A session of `user` (the default password) on the test Dovecot's IMAPS port."""
    with IMAPClient("127.0.0.1", server.imaps_port, ssl_context=context) as client:
        client.login(user, DEFAULT_USER_PASSWORD)
        yield client


@dataclass(frozen=True)
class TargetUser:
    """A fresh user of the test Dovecot (the `target_user` fixture): their own session,
    and their mailbox opened as a migration target."""

    server: DovecotServer
    context: ssl.SSLContext
    ca_file: Path
    name: str

    def session(self) -> contextlib.AbstractContextManager[IMAPClient]:
        return user_session(self.server, self.name, self.context)

    def target(self) -> ImapTarget:
        return imap_target(self.server, self.ca_file, self.name)


def batch_job(
    row: dict[str, str], method: AccessMethod = AccessMethod.INDIVIDUAL, **kw: Any
) -> MailboxJob:
    """The one job a one-row batch CSV (the row's own columns) gives for `method`; `kw` as
    parse_batch takes it (admin, combined_template, protocol)."""
    result = parse_batch(batch_text([row], list(row)), method, **kw)
    assert not result.problems, result.problems
    (job,) = result.jobs
    return job


def individual_jobs(
    rows: list[dict[str, str]], options: RunOptions, box: SecretBox
) -> list[NewJob]:
    protocol = connector(options.source_kind).protocol
    result = parse_batch(
        batch_text(rows),
        AccessMethod.INDIVIDUAL,
        protocol=protocol,
        token_logins=options.source_auth is not None,
    )
    assert not result.problems, result.problems
    return build_jobs(result.jobs, options, box)


def fresh_box() -> tuple[str, SecretBox]:
    key = new_key()
    return key, SecretBox(key)


def digest(raw: bytes) -> str:
    """What the tests tell a message by: the SHA-256 of its bytes."""
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class Stored:
    sha256: str
    flags: frozenset[str]
    internaldate: datetime
    size: int


def each_folder(
    server: DovecotServer,
    login: str,
    password: str,
    context: ssl.SSLContext,
    items: list[str],
    *,
    port: int | None = None,
) -> Iterator[tuple[str, list[dict[bytes, Any]]]]:
    """Every selectable folder of a mailbox on the test Dovecot (or on `port`), with `items`
    of each of its messages."""
    with IMAPClient(
        "127.0.0.1", port or server.imaps_port, ssl=True, ssl_context=context, timeout=60
    ) as client:
        client.normalise_times = False
        # AUTHENTICATE PLAIN sends UTF-8; imaplib's LOGIN is ASCII only (batch_password).
        client.plain_login(login, password)
        for flags, _delim, name in client.list_folders():
            if b"\\Noselect" in flags or b"\\NonExistent" in flags:
                continue
            client.select_folder(name, readonly=True)
            uids = client.search("ALL")
            fetched: list[dict[bytes, Any]] = []
            for start in range(0, len(uids), 500):
                fetched.extend(client.fetch(uids[start : start + 500], items).values())
            yield name, fetched


def snapshot(
    server: DovecotServer, login: str, password: str, context: ssl.SSLContext
) -> dict[str, list[Stored]]:
    """Every message of every selectable folder: hash of its bytes, flags, INTERNALDATE."""
    items = ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"]
    return {
        name: [
            Stored(
                sha256=digest(data[b"BODY[]"]),
                flags=frozenset(f.decode() for f in data[b"FLAGS"] if f.lower() != b"\\recent"),
                internaldate=data[b"INTERNALDATE"],
                size=len(data[b"BODY[]"]),
            )
            for data in fetched
        ]
        for name, fetched in each_folder(server, login, password, context, items)
    }


def counts(view: dict[str, list[Stored]]) -> dict[str, int]:
    return {name: len(items) for name, items in view.items() if items}


def hashes(items: list[Stored]) -> Counter[str]:
    return Counter(s.sha256 for s in items)


def assert_copied_exactly(
    server: DovecotServer,
    sent: Sequence[PopulatedMessage],
    target: str,
    password: str,
    context: ssl.SSLContext,
    *,
    flags: bool = True,
) -> None:
    """`target` holds each message of `sent` once, in the folder the shipped map sends its
    folder to, with its bytes, its INTERNALDATE and (unless `flags` is false: POP3 has none
    to carry) its flags; and nothing else."""
    expected: dict[str, Counter[str]] = {}
    for message in sent:
        folder = default_map_target(tuple(message.folder.split("/")))
        expected.setdefault(folder, Counter())[digest(message.raw)] += 1
    view = snapshot(server, target, password, context)
    got = {name: hashes(items) for name, items in view.items() if items}
    assert got.keys() == expected.keys()
    for folder in expected:
        missing = expected[folder] - got[folder]
        extra = got[folder] - expected[folder]
        assert not missing and not extra, (folder, len(missing), len(extra))
    originals = {digest(m.raw): m for m in sent}
    for items in view.values():
        for stored in items:
            if flags:
                assert stored.flags == frozenset(originals[stored.sha256].flags)
            assert stored.internaldate == originals[stored.sha256].internaldate


def default_map_target(path: tuple[str, ...]) -> str:
    """Where the shipped folder map sends a source path on a Dovecot target."""
    target = default_folder_map().map(path)
    names = {
        "Inbox": "INBOX",
        "Sent Items": "Sent",
        "Junk E-mail": "Junk",
        "Deleted Items": "Trash",
        "Drafts": "Drafts",
    }
    top = [names[target.special.value]] if target.special else []
    return "/".join(top + list(target.subpath))


def run_in_process(
    store: StateStore,
    batch_id: str,
    options: RunOptions,
    source_url: str,
    source: str,
    password: str,
    target: str,
    *,
    meta: dict[str, str] | None = None,
) -> MailboxStatus:
    """One mailbox through runner.execute_job (what a Celery task runs), to its end."""
    box = SecretBox(new_key())
    jobs = individual_jobs([source_row(source_url, source, password, target)], options, box)
    store.create_batch(batch_id, meta or {}, jobs)
    execute_job(store, batch_id, jobs[0].job_id, box)
    status = store.mailbox(batch_id, jobs[0].job_id)
    assert status is not None
    return status


class CopyMailbox:
    """The ``copy_mailbox`` fixture: one mailbox copied in this process through
    runner.execute_job, as a Celery task runs it (run_in_process); its status at the end.

    The source is on the test Dovecot (IMAPS, or POP3S with ``source_kind="pop"``) unless
    `source_url` names another; the target is a mailbox of the test Dovecot, or `into` an
    EWS server, its service account impersonating the target; `options` are RunOptions
    fields, over `defaults` (RunOptions fields too)."""

    def __init__(
        self, dovecot: DovecotServer, ca_file: Path, redis_url: str, **defaults: object
    ) -> None:
        self._dovecot, self._ca_file, self._redis_url = dovecot, ca_file, redis_url
        self._defaults = defaults

    def __call__(
        self,
        source: str,
        target: str,
        *,
        password: str = DEFAULT_USER_PASSWORD,
        source_url: str | None = None,
        into: EwsServer | None = None,
        batch_id: str = "b1",
        rewrite: RewriteMaps | None = None,
        **options: object,
    ) -> MailboxStatus:
        options = {**self._defaults, **options}
        if rewrite is not None:
            options["rewrite"] = rewrite  # the job carries its rewrite maps
        if into is not None:
            run = ews_target_options(into.url, self._ca_file, **options)
        else:
            run = run_options(self._dovecot, self._ca_file, **options)
        if source_url is None:
            dovecot = self._dovecot
            source_url = pop3s(dovecot) if run.source_kind == "pop" else imaps(dovecot)
        store = StateStore.from_url(self._redis_url)
        return run_in_process(store, batch_id, run, source_url, source, password, target)


def newest_that_fit(sent: Sequence[PopulatedMessage], quota: int) -> list[PopulatedMessage]:
    """What a quota stop must leave at the target: the newest messages, in date order,
    up to the first one that does not fit (worked out here apart from the copier)."""
    fits: list[PopulatedMessage] = []
    used = 0
    for message in sorted(sent, key=lambda m: m.internaldate, reverse=True):
        if used + message.size > quota:
            break
        fits.append(message)
        used += message.size
    return fits


def eventually(
    condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "the condition"
) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds.  What tests wait on
    instead of sleeping a guessed time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not hold within {timeout} s")
        time.sleep(0.01)

"""Jobs as payloads, and running one job: what both the Celery task and the
in-process pool of `migrator run` call.

The enqueuing side turns MailboxJob values into self-contained JSON payloads
(passwords sealed, bound to their server and login) stored in Redis; the worker side opens one,
takes the mailbox lock and a connection slot on the source server, keeps both
alive with a heartbeat while the copier works, and records the outcome.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from migrator import mailboxid
from migrator import payload as payloads
from migrator.batch import (
    AccessMethod,
    AdminLogin,
    Credentials,
    MailboxJob,
    ServerAddress,
    combine_login,
)
from migrator.copier import (
    CONNECTIONS_PER_MAILBOX,
    LATE_COMMIT_GRACE,
    CopyOptions,
    migrate_mailbox,
)
from migrator.errors import ConfigError, LockLost, PayloadTampered
from migrator.ews import EwsSettings
from migrator.foldermap import FolderMap, default_folder_map, parse_folder_map
from migrator.forwarding import ForwardAction
from migrator.forwardjobs import DEFAULT_SIEVE_PORT, execute_forwarding
from migrator.imapconn import ConnectOptions
from migrator.report import MailboxResult, MailboxState
from migrator.rewrite import RewriteMaps
from migrator.secrets import SecretBox
from migrator.sending import (
    BATCH_BYTES,
    GROUPING_WINDOW,
    PREFETCH_BYTES,
    ConnectionSlots,
    InFlight,
)
from migrator.sources.base import MailboxSource
from migrator.sources.ews import EwsSource, copy_non_mail
from migrator.sources.imap import ImapSource
from migrator.sources.pop3 import Pop3Source
from migrator.state import Lease, NewJob, StateStore
from migrator.targets.base import MailboxTarget
from migrator.targets.ews import EwsTarget
from migrator.targets.imap import ImapTarget

log = logging.getLogger(__name__)

LOCK_TTL_ENV = "MIGRATOR_LOCK_TTL"


@dataclass(frozen=True)
class TargetSpec:
    """How to reach the target mailboxes: an admin acting for each TargetIdentity."""

    server: ServerAddress
    method: AccessMethod  # combined or proxyauth
    admin: AdminLogin
    combined_template: str = "{admin}/{user}"
    kind: str = "imap"  # imap or ews
    ews: EwsSettings | None = None  # kind ews: endpoint, auth, access (admin: the login)

    def credentials(self, identity: str) -> Credentials:
        if self.method is AccessMethod.PROXYAUTH:
            return Credentials(self.admin.login, self.admin.password, authzid=identity)
        if self.method is AccessMethod.COMBINED:
            login = combine_login(self.combined_template, admin=self.admin.login, user=identity)
            return Credentials(login, self.admin.password)
        raise ConfigError(
            f"target method {self.method.value} is not supported: use combined or proxyauth"
        )


@dataclass(frozen=True)
class RunOptions:
    target: TargetSpec
    source_kind: str = "imap"  # imap or pop
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    since: datetime | None = None
    until: datetime | None = None
    foldermap_xml: bytes | None = None  # None: the shipped config/foldermap.xml
    quotas: Mapping[str, int] | None = None  # activation CSV, keyed by lower-cased identity
    max_connections_per_server: int = 8
    source_ews: EwsSettings | None = None  # source_kind ews: auth and access
    forward_after_copy: bool = False  # set forwarding to the target when a mailbox is done
    sieve_port: int = DEFAULT_SIEVE_PORT  # ManageSieve on the source host, for that forwarding
    late_commit_grace: float = LATE_COMMIT_GRACE  # see CopyOptions
    # At most this many connections to each side per mailbox, where the adapters allow
    # more than one and the source server's slots (max_connections_per_server) have room.
    connections_per_mailbox: int = CONNECTIONS_PER_MAILBOX
    batch_bytes: int = BATCH_BYTES  # the send loop's bounds: see CopyOptions
    prefetch_bytes: int = PREFETCH_BYTES
    grouping_window: int = GROUPING_WINDOW


def mailbox_key(job: MailboxJob, target: TargetSpec) -> str:
    """Stable id of a (source mailbox, target mailbox) pair, for checkpoints: the same
    mailboxes however the CSV spells their servers (mailboxid.py)."""
    return mailboxid.mailbox_key(job, target.server)


def legacy_mailbox_key(job: MailboxJob, target: TargetSpec) -> str:
    """Where versions before canonical mailbox names kept this pair's checkpoints."""
    text = "|".join(
        [
            str(job.source_server),
            job.source_identity.lower(),
            job.source_root_folder or "",
            str(target.server),
            job.target_identity.lower(),
        ]
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def build_jobs(jobs: Sequence[MailboxJob], options: RunOptions, box: SecretBox) -> list[NewJob]:
    """Payloads for Redis: everything a worker needs, passwords sealed."""
    result = []
    for index, job in enumerate(jobs, start=1):
        target_creds = options.target.credentials(job.target_identity)
        quota = (options.quotas or {}).get(job.target_identity.lower())
        payload = {
            "version": 1,
            "line": job.line,
            "mailbox_key": mailbox_key(job, options.target),
            "legacy_mailbox_key": legacy_mailbox_key(job, options.target),
            "source": payloads.source_json(
                job,
                options.source_kind,
                box,
                options.source_ews,
                options.connect,
                options.sieve_port,
            ),
            "target": {
                **payloads.target_json(
                    options.target.kind,
                    job.target_identity,
                    options.target.server,
                    target_creds,
                    options.connect,
                    options.target.ews,
                    box,
                ),
                "activation_quota": quota,
            },
            "options": {
                "since": options.since.isoformat() if options.since else None,
                "until": options.until.isoformat() if options.until else None,
                **payloads.connect_json(options.connect),
                "foldermap_xml": options.foldermap_xml.decode("utf-8")
                if options.foldermap_xml
                else None,
                "max_connections_per_server": options.max_connections_per_server,
                "forward_after_copy": options.forward_after_copy,
                "sieve_port": options.sieve_port,
                "late_commit_grace": options.late_commit_grace,
                "connections_per_mailbox": options.connections_per_mailbox,
                "batch_bytes": options.batch_bytes,
                "prefetch_bytes": options.prefetch_bytes,
                "grouping_window": options.grouping_window,
            },
        }
        result.append(
            NewJob(
                job_id=f"{index:05d}",
                line=job.line,
                source_identity=job.source_identity,
                target_identity=job.target_identity,
                mailbox_key=payload["mailbox_key"],  # type: ignore[arg-type]
                payload=json.dumps(payload),
            )
        )
    return result


@contextmanager
def _target_slot(
    store: StateStore, payload: Mapping[str, Any], lease: Lease, wait: float
) -> Iterator[None]:
    """An EWS target's tenant caps concurrent mailboxes (throttling): one slot per mailbox
    on its endpoint, like the source server's cap."""
    ews = payload["target"].get("ews")
    if ews is None:
        yield
        return
    slot, cap = str(ews["slot"]), int(ews["max_connections"])
    with (
        _slot(store, slot, lease.owner, cap, lease.ttl, wait),
        _heartbeat(store, lease, slot),
    ):
        yield


_folder_maps: dict[str, FolderMap] = {}


def _folder_map(xml: str | None) -> FolderMap:
    if xml is None:
        return default_folder_map()
    digest = hashlib.sha256(xml.encode("utf-8")).hexdigest()
    if digest not in _folder_maps:
        _folder_maps[digest] = parse_folder_map(xml.encode("utf-8"), source="batch folder map")
    return _folder_maps[digest]


def rewrite_meta(maps: RewriteMaps | None) -> str:
    """The batch's rewrite maps as JSON for its Redis hash ("" when rewriting is off)."""
    if maps is None:
        return ""
    return json.dumps(
        {
            "identities": dict(maps.identities),
            "x500": dict(maps.x500),
            "domains": dict(maps.domains),
            "keep_original": maps.keep_original,
        }
    )


_rewrites: dict[str, RewriteMaps] = {}


def _rewrite_maps(text: str | None) -> RewriteMaps | None:
    if not text:
        return None
    if text not in _rewrites:
        data = json.loads(text)
        _rewrites[text] = RewriteMaps(
            identities=data["identities"],
            x500=data["x500"],
            domains=data["domains"],
            keep_original=bool(data["keep_original"]),
        )
    return _rewrites[text]


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lock_ttl() -> float:
    return float(os.environ.get(LOCK_TTL_ENV, "30"))


class MailboxBusy(Exception):
    """Another worker holds the mailbox (or every connection slot of its server)."""


def execute_job(
    store: StateStore,
    batch_id: str,
    job_id: str,
    box: SecretBox,
    *,
    slot_wait: float = 600.0,
    stop: threading.Event | None = None,
) -> MailboxResult | None:
    """Run one mailbox of a batch to its end and record the result.

    Returns None when there is nothing to do (already done, or the batch is gone);
    raises MailboxBusy when another worker holds the mailbox, so the caller retries
    later.  Once `stop` is set (Ctrl-C in `migrator run`), the copy ends after the
    batches in flight are checkpointed and the mailbox is recorded `interrupted`; a
    mailbox not started yet is left as it is.
    """
    if stop is not None and stop.is_set():
        return None
    raw = store.payload(batch_id, job_id)
    status = store.mailbox(batch_id, job_id)
    if raw is None or status is None:
        log.warning("batch %s job %s is not in Redis; nothing to do", batch_id, job_id)
        return None
    if status.state is MailboxState.DONE:
        return None
    payload = json.loads(raw)
    target = payload["target"]
    lease = store.acquire(
        mailboxid.lock_names(payloads.server(target["server"]), str(target["identity"])),
        new_owner(),
        lock_ttl(),
    )
    if lease is None:
        raise MailboxBusy(f"mailbox {status.target_identity} is being written by another worker")
    try:
        source_server = mailboxid.server_id(payloads.server(payload["source"]["server"]))
        cap = int(payload["options"]["max_connections_per_server"])
        owner, ttl = lease.owner, lease.ttl
        extra = ExtraSlots(store, source_server, owner, cap, ttl)
        with (
            _slot(store, source_server, owner, cap, ttl, slot_wait),
            _heartbeat(store, lease, source_server, extra, (batch_id, job_id)) as lost,
            _target_slot(store, payload, lease, slot_wait),
        ):
            store.set_state(batch_id, job_id, MailboxState.RUNNING)
            try:
                result = _run(store, batch_id, job_id, payload, box, lease, lost, extra, stop)
            except LockLost:
                log.warning("mailbox %s: another worker took it over", status.source_identity)
                return None
        store.record_result(batch_id, job_id, result)
        if result.state is MailboxState.DONE and payload["options"].get("forward_after_copy"):
            execute_forwarding(store, ForwardAction.SET, payload, box, request=batch_id)
        log.info(
            "mailbox %s: %s (%d copied, %d already there, %d left)",
            status.source_identity,
            result.state.value,
            result.copied_messages,
            result.already_messages,
            result.left_messages,
        )
        return result
    finally:
        store.unlock(lease)


def _run(
    store: StateStore,
    batch_id: str,
    job_id: str,
    payload: Mapping[str, Any],
    box: SecretBox,
    lease: Lease | None = None,
    lost: threading.Event | None = None,
    slots: ConnectionSlots | None = None,
    stop: threading.Event | None = None,
) -> MailboxResult:
    opts = payload["options"]
    connect = payloads.connect_options(opts)
    try:
        src = payload["source"]
        tgt = payload["target"]
        job = payloads.mailbox_job(payload, box)
        target_server = payloads.server(tgt["server"])
        target_creds = payloads.target_credentials(payload, box)
        folder_map = _folder_map(opts.get("foldermap_xml"))
        source_ews = payloads.ews_settings(payload, payloads.SOURCE, box)
        target_ews = payloads.ews_settings(payload, payloads.TARGET, box)
    except (ConfigError, PayloadTampered) as exc:
        return MailboxResult(state=MailboxState.FAILED, error=str(exc))
    options = CopyOptions(
        since=datetime.fromisoformat(opts["since"]) if opts.get("since") else None,
        until=datetime.fromisoformat(opts["until"]) if opts.get("until") else None,
        activation_quota=tgt.get("activation_quota"),
        rewrite=_rewrite_maps(store.batch_meta(batch_id).get("rewrite")),
        late_commit_grace=float(opts.get("late_commit_grace", LATE_COMMIT_GRACE)),
        connections=int(opts.get("connections_per_mailbox", 1)),
        batch_bytes=int(opts.get("batch_bytes", BATCH_BYTES)),
        prefetch_bytes=int(opts.get("prefetch_bytes", PREFETCH_BYTES)),
        grouping_window=int(opts.get("grouping_window", GROUPING_WINDOW)),
    )
    result = migrate_mailbox(
        lambda: open_source(str(src["kind"]), job, connect, source_ews),
        lambda: open_target(job.target_identity, target_server, target_creds, connect, target_ews),
        folder_map,
        store.progress(
            batch_id,
            job_id,
            str(payload["mailbox_key"]),
            lease,
            lost,
            payload.get("legacy_mailbox_key"),
        ),
        options,
        slots,
        stop,
        InFlight.inherited() if lease is not None and lease.inherited else None,
    )
    if source_ews is not None and result.state is MailboxState.DONE:
        ews_source = source_ews  # bound for the lambdas
        open_ews_target = (
            (lambda: EwsTarget(target_ews, target_creds, job.target_identity))
            if target_ews is not None
            else None
        )
        result = copy_non_mail(result, lambda: EwsSource(job, ews_source), open_ews_target)
    return result


def open_target(
    identity: str,
    server: ServerAddress,
    credentials: Credentials,
    connect: ConnectOptions,
    ews: EwsSettings | None = None,
) -> MailboxTarget:
    """The adapter for the target: EWS where the payload carries EWS settings, else IMAP."""
    if ews is not None:
        return EwsTarget(ews, credentials, identity)
    return ImapTarget(server, credentials, identity, connect)


def open_source(
    kind: str, job: MailboxJob, connect: ConnectOptions, ews: EwsSettings | None = None
) -> MailboxSource:
    """The adapter for one source protocol; each translates its library's errors."""
    if kind == "ews":
        if ews is None:
            raise ConfigError("an EWS source needs its settings in the payload")
        return EwsSource(job, ews)
    if kind == "imap":
        return ImapSource(job, connect)
    if kind == "pop":
        return Pop3Source(job, connect)
    raise ConfigError(f"unknown source type {kind!r}")


@contextmanager
def _slot(
    store: StateStore, server: str, owner: str, cap: int, ttl: float, wait: float
) -> Iterator[None]:
    deadline = time.monotonic() + wait
    while not store.acquire_slot(server, owner, cap, ttl):
        if time.monotonic() > deadline:
            raise MailboxBusy(f"all {cap} connection slots of {server} are in use")
        time.sleep(0.5)
    try:
        yield
    finally:
        store.release_slot(server, owner)


class ExtraSlots:
    """The copier's ConnectionSlots: a mailbox's extra connections to its source server
    take slots of their own (`OWNER+N`), beside the one the mailbox holds, never waiting
    for one; the mailbox's heartbeat keeps them alive."""

    def __init__(self, store: StateStore, server: str, owner: str, cap: int, ttl: float) -> None:
        self._store, self._server, self._owner, self._cap, self._ttl = (
            store,
            server,
            owner,
            cap,
            ttl,
        )
        self._held: list[str] = []
        self._lock = threading.Lock()

    def take(self, wanted: int) -> int:
        taken = 0
        while taken < wanted:
            with self._lock:
                name = f"{self._owner}+{len(self._held) + 1}"
            if not self._store.acquire_slot(self._server, name, self._cap, self._ttl):
                break
            with self._lock:
                self._held.append(name)
            taken += 1
        return taken

    def give_back(self) -> None:
        with self._lock:
            held, self._held = self._held, []
        for name in held:
            self._store.release_slot(self._server, name)

    def refresh(self) -> None:
        with self._lock:
            held = list(self._held)
        for name in held:
            self._store.refresh_slot(self._server, name, self._ttl)


@contextmanager
def _heartbeat(
    store: StateStore,
    lease: Lease,
    server: str,
    extra: ExtraSlots | None = None,
    row: tuple[str, str] | None = None,
) -> Iterator[threading.Event]:
    """Keep the mailbox's locks and the connection slot alive while the copier works; a
    killed worker stops beating and both expire within the lease's TTL.

    A lock that vanished with Redis's data is taken again; one that another worker holds,
    or held since (its epoch moved on), sets the event it yields, and the copier stops
    before its next batch (every batch and checkpoint is fenced by the same test). With
    `row` (batch id, job id), each beat is also noted on the mailbox row, with the names
    of its locks, where the workers' reapers look for dead workers."""
    stop = threading.Event()
    lost = threading.Event()

    def beat() -> None:
        while not stop.wait(lease.ttl / 3):
            try:
                if not store.renew(lease):
                    lost.set()
                store.refresh_slot(server, lease.owner, lease.ttl)
                if extra is not None:
                    extra.refresh()
                if row is not None:
                    store.beat(*row, lease.names)
            except Exception:  # a Redis blip must not kill the copy; the next beat retries
                log.warning("heartbeat for mailbox lock failed", exc_info=True)

    if row is not None:
        store.beat(*row, lease.names)
    thread = threading.Thread(target=beat, name=f"heartbeat-{lease.owner[-8:]}", daemon=True)
    thread.start()
    try:
        yield lost
    finally:
        stop.set()
        thread.join(timeout=5)

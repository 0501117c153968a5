"""Running one job: what both the Celery task and the in-process pool of `migrator run`
call.

The worker reads the job (jobs.Job), takes the target mailbox's locks and a connection
slot on the source server, keeps both alive with a heartbeat while the copier works
(leases.py), opens both ends through their connectors, and records the outcome.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace

from migrator import connectors, jobs, mailboxid, notify
from migrator.connectors.base import SourceEnd, TargetEnd
from migrator.copier import CopyOptions, migrate_mailbox
from migrator.errors import BadJob, ConfigError, LockLost, PayloadTampered
from migrator.events import EventKind
from migrator.foldermap import FolderMap, default_folder_map, parse_folder_map
from migrator.forwarding import ForwardAction
from migrator.forwardjobs import execute_forwarding
from migrator.leases import ExtraSlots, MailboxBusy, heartbeat, slot, target_slot
from migrator.oauth import share_tokens
from migrator.report import MailboxResult, MailboxState
from migrator.secrets import SecretBox
from migrator.sending import InFlight
from migrator.state import Lease, StateStore
from migrator.syncstate import PassKind, PassRequest

__all__ = ["MailboxBusy", "execute_job", "lock_ttl", "new_owner"]

log = logging.getLogger(__name__)

LOCK_TTL_ENV = "MIGRATOR_LOCK_TTL"

_folder_maps: dict[str, FolderMap] = {}


def _folder_map(xml: str | None) -> FolderMap:
    if xml is None:
        return default_folder_map()
    digest = hashlib.sha256(xml.encode("utf-8")).hexdigest()
    if digest not in _folder_maps:
        _folder_maps[digest] = parse_folder_map(xml.encode("utf-8"), source="batch folder map")
    return _folder_maps[digest]


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def lock_ttl() -> float:
    return float(os.environ.get(LOCK_TTL_ENV, "30"))


def execute_job(
    store: StateStore,
    batch_id: str,
    job_id: str,
    box: SecretBox,
    *,
    slot_wait: float = 600.0,
    stop: threading.Event | None = None,
    request: PassRequest | None = None,
) -> MailboxResult | None:
    """Run one mailbox of a batch to its end and record the result.

    `request`: the pass to run (syncstate.PassRequest): the first (copy) pass by default;
    an incremental one (`migrator sync`) ends a mailbox `synced`, the final one
    (`migrator complete`) `completed`, and a completed mailbox is never run again.

    Returns None when there is nothing to do (already done, or the batch is gone);
    raises MailboxBusy when another worker holds the mailbox, so the caller retries
    later.  Once `stop` is set (Ctrl-C in `migrator run`), the copy ends after the
    batches in flight are checkpointed and the mailbox is recorded `interrupted`; a
    mailbox not started yet is left as it is.  A payload this worker cannot read fails
    its mailbox, saying why.
    """
    if stop is not None and stop.is_set():
        return None
    raw = store.payload(batch_id, job_id)
    status = store.mailbox(batch_id, job_id)
    if raw is None or status is None:
        log.warning("batch %s job %s is not in Redis; nothing to do", batch_id, job_id)
        return None
    try:
        # A task sent without a request (a reaper's requeue, a resume) runs the pass the
        # mailbox was last queued for.
        request = request or PassRequest.from_json(store.pass_request(batch_id, job_id))
    except BadJob as exc:
        return _refused(store, batch_id, job_id, exc)
    if not _wanted(status.state, request):
        return None
    if status.state is MailboxState.PAUSED and (status.resume_at or 0.0) > time.time() + 1:
        # A daily cap: its own task comes at resume_at; one early (`resume`, a broker's
        # second delivery) would only find the cap reached and queue another.
        log.info("mailbox %s paused until %s", status.source_identity, status.resume_at)
        return None
    try:
        job = jobs.Job.from_json(raw)
        if job.target is None:
            raise BadJob("a migration job without a target")
    except BadJob as exc:
        failed = _refused(store, batch_id, job_id, exc)
        tell_ended(store, batch_id, job_id, box)
        return failed
    ended = _locked(store, batch_id, job_id, job, box, slot_wait, stop, request)
    # Told with the mailbox's locks let go: a slow relay holds nothing.  A paused mailbox
    # has not ended: it is told when it does.
    if ended is not None and ended.state is not MailboxState.PAUSED:
        tell_ended(store, batch_id, job_id, box)
    return ended


def _refused(store: StateStore, batch_id: str, job_id: str, exc: BadJob) -> MailboxResult:
    """A payload (or pass request) this worker cannot read: the mailbox fails, saying why."""
    failed = MailboxResult(state=MailboxState.FAILED, error=str(exc), error_code=exc.code.value)
    store.record_result(batch_id, job_id, failed)
    note_outcome(store, batch_id, job_id, failed)
    return failed


def _wanted(state: MailboxState, request: PassRequest) -> bool:
    """Whether a mailbox in `state` runs the requested pass: a first pass until it is
    done; incremental passes until it is completed."""
    if state is MailboxState.COMPLETED:
        return False
    return request.kind is not PassKind.COPY or not state.copied


def _locked(
    store: StateStore,
    batch_id: str,
    job_id: str,
    job: jobs.Job,
    box: SecretBox,
    slot_wait: float,
    stop: threading.Event | None,
    request: PassRequest,
) -> MailboxResult | None:
    """execute_job under the target mailbox's locks and the source server's slot."""
    assert job.target is not None
    names = mailboxid.lock_names(job.target.server, job.target.identity)
    lease = store.acquire(names, new_owner(), lock_ttl())
    if lease is None:
        raise MailboxBusy(f"mailbox {job.target_identity} is being written by another worker")
    try:
        source_server = mailboxid.server_id(job.source.server)
        cap = job.options.max_connections_per_server
        owner, ttl = lease.owner, lease.ttl
        extra = ExtraSlots(store, source_server, owner, cap, ttl)
        with (
            slot(store, source_server, owner, cap, ttl, slot_wait),
            heartbeat(store, lease, source_server, extra, (batch_id, job_id)) as lost,
            target_slot(store, _target_cap(job), lease, slot_wait),
        ):
            store.set_state(batch_id, job_id, MailboxState.RUNNING)
            store.note_event(batch_id, job_id, EventKind.START, f"started by {owner}")
            try:
                result = _run(store, batch_id, job_id, job, box, lease, lost, extra, stop, request)
            except LockLost:
                log.warning("mailbox %s: another worker took it over", job.source.identity)
                return None
        result = _lifecycle(result, request)
        store.record_result(batch_id, job_id, result, first_pass=request.kind is PassKind.COPY)
        note_outcome(store, batch_id, job_id, result)
        store.record_pass(batch_id, job_id, request.kind.value, result)
        if request.kind is PassKind.COPY and result.state.copied and job.options.forward_after_copy:
            execute_forwarding(store, ForwardAction.SET, job, box, request=batch_id)
        if result.state is MailboxState.COMPLETED and request.forward_after:
            execute_forwarding(store, ForwardAction.SET, job, box, request=batch_id)
        log.info(
            "mailbox %s: %s (%d copied, %d already there, %d left)",
            job.source.identity,
            result.state.value,
            result.copied_messages,
            result.already_messages,
            result.left_messages,
        )
        return result
    finally:
        store.unlock(lease)


def _lifecycle(result: MailboxResult, request: PassRequest) -> MailboxResult:
    """A pass that ended done leaves the mailbox synced (in step with its source, waiting
    for cutover), the first pass as each incremental one; the final pass, completed."""
    if result.state is not MailboxState.DONE:
        return result
    state = MailboxState.COMPLETED if request.kind is PassKind.FINAL else MailboxState.SYNCED
    return replace(result, state=state)


def _target_cap(job: jobs.Job) -> tuple[str, int] | None:
    """The connection cap of the target's endpoint, where its connector has one."""
    assert job.target is not None
    if job.target.settings is None:
        return None
    target = connectors.connector(job.target.kind)
    return target.slot(target.settings_from_json(job.target.settings, job.options.connect))


def _run(
    store: StateStore,
    batch_id: str,
    job_id: str,
    job: jobs.Job,
    box: SecretBox,
    lease: Lease | None = None,
    lost: threading.Event | None = None,
    slots: ExtraSlots | None = None,
    stop: threading.Event | None = None,
    request: PassRequest | None = None,
) -> MailboxResult:
    assert job.target is not None
    share_tokens(store.token_shelf(), box)
    try:
        source_connector = connectors.connector(job.source.kind)
        target_connector = connectors.connector(job.target.kind)
        meters = store.byte_meters()
        source = dataclasses.replace(jobs.open_source(job, box), meters=meters)
        # Upload budgets per target mailbox are kept in Redis, across every worker.
        target = dataclasses.replace(jobs.open_target(job, box), uploads=store, meters=meters)
        folder_map = _folder_map(job.options.foldermap_xml)
    except (ConfigError, PayloadTampered) as exc:
        return MailboxResult(state=MailboxState.FAILED, error=str(exc), error_code=exc.code.value)
    result = migrate_mailbox(
        lambda: source_connector.open_source(source),
        lambda: target_connector.open_target(target),
        folder_map,
        store.progress(batch_id, job_id, job.mailbox_key, lease, lost, job.legacy_mailbox_key),
        copy_options(job),
        slots,
        stop,
        InFlight.inherited() if lease is not None and lease.inherited else None,
        store.event_sink(batch_id, job_id),
        request,
        gated_source=source_connector.gated_login,
    )
    return source_connector.after_copy(result, source, target, target_connector.kind)


# Skipped messages named one by one in the event log; the mailbox row names them all.
SKIP_EVENTS_MAX = 100


def note_outcome(store: StateStore, batch_id: str, job_id: str, result: MailboxResult) -> None:
    """The end of a mailbox in its event log: each skipped message, a quota stop, the end."""
    for skipped in result.skipped[:SKIP_EVENTS_MAX]:
        store.note_event(
            batch_id,
            job_id,
            EventKind.SKIP,
            f"skipped uid {skipped.uid} in {skipped.folder!r}: {skipped.reason}",
            folder=skipped.folder,
            uid=skipped.uid,
            size=skipped.size,
        )
    if result.state is MailboxState.QUOTA_STOPPED:
        store.note_event(
            batch_id,
            job_id,
            EventKind.QUOTA_STOP,
            f"target full: {result.left_messages} messages ({result.left_bytes} bytes) left",
            left_messages=result.left_messages,
            left_bytes=result.left_bytes,
        )
    text = (
        f"{result.state.value}: {result.copied_messages} copied, "
        f"{result.already_messages} already there, {len(result.skipped)} skipped"
    )
    store.note_event(
        batch_id,
        job_id,
        EventKind.END,
        f"{text}; {result.error}" if result.error else text,
        state=result.state.value,
        copied_messages=result.copied_messages,
        copied_bytes=result.copied_bytes,
        skipped=len(result.skipped),
        **({"resume_at": result.resume_at} if result.resume_at is not None else {}),
    )


def tell_ended(store: StateStore, batch_id: str, job_id: str, box: SecretBox) -> None:
    """Notifications the batch asked for: this mailbox's end (--notify-each-mailbox), and
    the batch's, by whichever worker ends its last mailbox."""
    settings = notify.settings_for(store, batch_id, box)
    if settings is None:
        return
    row = store.mailbox(batch_id, job_id)
    if row is not None:
        notify.notify_mailbox(settings, batch_id, row)
    if store.claim_batch_end(batch_id):
        notify.notify_batch(settings, store, batch_id)


def copy_options(job: jobs.Job) -> CopyOptions:
    """What the copier is told of a job's options."""
    options = job.options
    return CopyOptions(
        since=options.since,
        until=options.until,
        activation_quota=job.activation_quota,
        rewrite=job.rewrite,
        late_commit_grace=options.late_commit_grace,
        connections=options.connections_per_mailbox,
        batch_bytes=options.batch_bytes,
        prefetch_bytes=options.prefetch_bytes,
        grouping_window=options.grouping_window,
    )


def open_ends(job: jobs.Job, box: SecretBox) -> tuple[SourceEnd, TargetEnd]:
    """Both ends of a migration job, secrets opened (tests and tools)."""
    return jobs.open_source(job, box), jobs.open_target(job, box)

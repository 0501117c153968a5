"""Forwarding jobs: their payloads, the connector each goes through, and their state in
Redis.

A forwarding job is a `jobs.Job` without a target end (only the target identity), so
`--forward-after-copy` runs the same code on the migration's own job when its mailbox is
done.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from migrator import connectors, jobs
from migrator.connectors.base import Settings
from migrator.errors import MigrationError
from migrator.forwarding import ForwardAction, ForwardOutcome, ForwardState, refuse_reason
from migrator.model import ConnectOptions, MailboxJob, ServerAddress
from migrator.oauth import OAuthConfig, share_tokens
from migrator.prepare import source_end
from migrator.secrets import SecretBox, redact
from migrator.state import StateStore

log = logging.getLogger(__name__)

DEFAULT_SIEVE_PORT = jobs.DEFAULT_SIEVE_PORT


@dataclass(frozen=True)
class ForwardOptions:
    source_kind: str = "imap"  # the source's connector
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    sieve_port: int = DEFAULT_SIEVE_PORT  # ManageSieve, on the IMAP source's host
    source_settings: Settings | None = None
    source_auth: OAuthConfig | None = None  # --source-auth oauth2


def forward_key(server: ServerAddress, identity: str, root: str | None) -> str:
    """Stable id of one source mailbox's forwarding (whatever batch asked for it)."""
    text = "|".join([str(server), identity.lower(), root or ""])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def key_of(job: jobs.Job) -> str:
    return forward_key(job.source.server, job.source.identity, job.source.root_folder)


def build_forward_jobs(
    mailboxes: Sequence[MailboxJob], options: ForwardOptions, box: SecretBox
) -> list[jobs.Job]:
    """One job per mailbox, secrets sealed as in a migration job."""
    job_options = jobs.Options(connect=options.connect, sieve_port=options.sieve_port)
    return [
        jobs.Job(
            line=mailbox.line,
            source=source_end(
                mailbox,
                options.source_kind,
                options.source_settings,
                box,
                job_options,
                auth=options.source_auth,
            ),
            target_identity=mailbox.target_identity,
            options=job_options,
        )
        for mailbox in mailboxes
    ]


def execute_forwarding(
    store: StateStore,
    action: ForwardAction,
    job: jobs.Job,
    box: SecretBox,
    *,
    request: str,
) -> ForwardOutcome:
    """Run one forwarding job and record its outcome (a status check too)."""
    share_tokens(store.token_shelf(), box)
    outcome = run_forwarding(action, job, box)
    store.record_forwarding(
        key_of(job),
        {
            "source": job.source.identity,
            "line": str(job.line),
            "action": action.value,
            "state": outcome.state.value,
            "method": outcome.method,
            "target": outcome.target,
            "detail": outcome.detail,
            "request": request,
        },
    )
    log.info(
        "forwarding %s %s: %s %s",
        action.value,
        job.source.identity,
        outcome.state.value,
        outcome.detail,
    )
    return outcome


def run_forwarding(action: ForwardAction, job: jobs.Job, box: SecretBox) -> ForwardOutcome:
    try:
        source = jobs.open_source(job, box)
        mailbox = source.job
        target = mailbox.target_identity
        if action is ForwardAction.SET:
            logins = [mailbox.source_identity, mailbox.source_credentials.authzid or ""]
            reason = refuse_reason([a for a in logins if a], target)
            if reason is not None:
                return ForwardOutcome(ForwardState.REFUSED, "", target, reason)
        return connectors.connector(job.source.kind).forward(action, source)
    except MigrationError as exc:
        return ForwardOutcome(ForwardState.FAILED, "", job.target_identity, redact(str(exc)))

"""Forwarding jobs: their payloads, the session each opens, and their state in Redis.

A forwarding payload has the shape of a migration payload (line, source, target identity,
connection options), so `--forward-after-copy` runs the same code on the migration's own
payload when its mailbox is done.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrator import payload as payloads
from migrator.batch import MailboxJob, ServerAddress
from migrator.connectors.local.paths import LOCAL_KINDS
from migrator.errors import MigrationError, TransientError
from migrator.ews import EwsSettings
from migrator.ewsrules import EwsInboxRules
from migrator.forwarding import (
    ForwardAction,
    ForwardOutcome,
    ForwardState,
    manual_instruction,
    refuse_reason,
    rule_remove,
    rule_set,
    rule_status,
    sieve_remove,
    sieve_set,
    sieve_status,
)
from migrator.imapconn import ConnectOptions, tls_context
from migrator.managesieve import SieveClient
from migrator.secrets import SecretBox, redact
from migrator.state import StateStore

log = logging.getLogger(__name__)

DEFAULT_SIEVE_PORT = payloads.DEFAULT_SIEVE_PORT


@dataclass(frozen=True)
class ForwardOptions:
    source_kind: str = "imap"  # imap, pop or ews
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    sieve_port: int = DEFAULT_SIEVE_PORT  # ManageSieve, on the IMAP source's host
    source_ews: EwsSettings | None = None


def forward_key(server: ServerAddress | Mapping[str, Any], identity: str, root: str | None) -> str:
    """Stable id of one source mailbox's forwarding (whatever batch asked for it)."""
    address = server if isinstance(server, ServerAddress) else payloads.server(server)
    text = "|".join([str(address), identity.lower(), root or ""])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def key_of(payload: Mapping[str, Any]) -> str:
    src = payload["source"]
    return forward_key(src["server"], str(src["identity"]), src.get("root_folder"))


def options_json(options: ForwardOptions) -> dict[str, Any]:
    return {**payloads.connect_json(options.connect), "sieve_port": options.sieve_port}


def build_forward_jobs(
    jobs: Sequence[MailboxJob], options: ForwardOptions, box: SecretBox
) -> list[dict[str, Any]]:
    """One payload per mailbox, passwords sealed as in a migration payload."""
    return [
        {
            "version": 1,
            "line": job.line,
            "source": payloads.source_json(
                job,
                options.source_kind,
                box,
                options.source_ews,
                options.connect,
                options.sieve_port,
            ),
            "target": {"identity": job.target_identity},
            "options": options_json(options),
        }
        for job in jobs
    ]


def execute_forwarding(
    store: StateStore,
    action: ForwardAction,
    payload: Mapping[str, Any],
    box: SecretBox,
    *,
    request: str,
) -> ForwardOutcome:
    """Run one forwarding job and record its outcome (a status check too)."""
    outcome = run_forwarding(action, payload, box)
    src = payload["source"]
    store.record_forwarding(
        key_of(payload),
        {
            "source": str(src["identity"]),
            "line": str(payload["line"]),
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
        src["identity"],
        outcome.state.value,
        outcome.detail,
    )
    return outcome


def run_forwarding(
    action: ForwardAction, payload: Mapping[str, Any], box: SecretBox
) -> ForwardOutcome:
    opts = payload["options"]
    src = payload["source"]
    kind = str(src["kind"])
    try:
        job = payloads.mailbox_job(payload, box)
        target = job.target_identity
        if action is ForwardAction.SET:
            logins = [job.source_identity, job.source_credentials.authzid or ""]
            reason = refuse_reason([a for a in logins if a], target)
            if reason is not None:
                return ForwardOutcome(ForwardState.REFUSED, "", target, reason)
        connect = payloads.connect_options(opts)
        if kind == "ews":
            settings = payloads.ews_settings(payload, payloads.SOURCE, box)
            if settings is None:
                return _failed(target, "an EWS source needs its settings in the payload")
            rules = EwsInboxRules(job, settings)
            if action is ForwardAction.SET:
                return rule_set(rules, target)
            return rule_remove(rules) if action is ForwardAction.REMOVE else rule_status(rules)
        manual = _manual_reason(kind, job)
        if manual is not None:
            return _manual(action, job, manual)
        port = payloads.sieve_port(opts)  # as the source password is bound to
        with _sieve_session(job, port, connect) as session:
            if session is None:
                return _manual(
                    action, job, f"no ManageSieve service at {job.source_server.host}:{port}"
                )
            if action is ForwardAction.SET:
                return sieve_set(session, target)
            return (
                sieve_remove(session) if action is ForwardAction.REMOVE else sieve_status(session)
            )
    except MigrationError as exc:
        return _failed(str(payload["target"]["identity"]), str(exc))


def _failed(target: str, detail: str) -> ForwardOutcome:
    return ForwardOutcome(ForwardState.FAILED, "", target, redact(detail))


def _manual_reason(kind: str, job: MailboxJob) -> str | None:
    if kind == "pop":
        return "POP3 has no way to set forwarding"
    if kind in LOCAL_KINDS:  # the command refuses these; a payload that says so anyway
        return f"a {kind} source is files that receive no mail: there is nothing to forward"
    if job.source_root_folder:
        return (
            "the mailbox is read as the admin under a root folder, and the admin's login "
            "cannot reach the user's Sieve rules"
        )
    return None


def _manual(action: ForwardAction, job: MailboxJob, why: str) -> ForwardOutcome:
    server = str(job.source_server)
    target = job.target_identity
    if action is ForwardAction.REMOVE:
        detail = (
            f"{why}: remove the forwarding of {job.source_identity} to {target} by hand on {server}"
        )
    elif action is ForwardAction.STATUS:
        detail = f"{why}: check on {server} by hand"
    else:
        detail = manual_instruction(job.source_identity, target, server, why)
    return ForwardOutcome(ForwardState.MANUAL, "manual", target, detail)


@contextlib.contextmanager
def _sieve_session(job: MailboxJob, port: int, connect: ConnectOptions) -> Any:
    """A logged-in ManageSieve client for the source user, or None when the host has no
    ManageSieve service at all (connection refused)."""
    what = f"source mailbox {job.source_identity}"
    try:
        client = SieveClient.connect(
            job.source_server.host,
            port,
            context=tls_context(connect),
            timeout=connect.timeout,
            allow_plaintext=connect.allow_plaintext,
            what=what,
        )
    except TransientError as exc:
        if isinstance(exc.__cause__, ConnectionRefusedError):
            yield None
            return
        raise
    with client:
        creds = job.source_credentials
        client.authenticate(creds.login, creds.password, creds.authzid)
        yield client

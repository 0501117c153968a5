"""Forwarding from an IMAP source: our Sieve script over ManageSieve (RFC 5804), on the
source host; `manual` where the host has no ManageSieve or the login cannot reach the
user's rules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from migrator.connectors.base import SourceEnd
from migrator.connectors.imap.managesieve import SieveClient
from migrator.connectors.tls import tls_context
from migrator.errors import ErrorCode, TransientError
from migrator.forwarding import (
    ForwardAction,
    ForwardOutcome,
    manual_outcome,
    sieve_remove,
    sieve_set,
    sieve_status,
)
from migrator.model import ConnectOptions, MailboxJob

DEFAULT_SIEVE_PORT = 4190  # RFC 5804


def forward(action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
    job = source.job
    if job.source_root_folder:
        return manual_outcome(
            action,
            job,
            "the mailbox is read as the admin under a root folder, and the admin's login "
            "cannot reach the user's Sieve rules",
        )
    port = source.sieve_port or DEFAULT_SIEVE_PORT
    with _sieve_session(job, port, source.connect) as session:
        if session is None:
            return manual_outcome(
                action, job, f"no ManageSieve service at {job.source_server.host}:{port}"
            )
        if action is ForwardAction.SET:
            return sieve_set(session, job.target_identity)
        return sieve_remove(session) if action is ForwardAction.REMOVE else sieve_status(session)


@contextlib.contextmanager
def _sieve_session(
    job: MailboxJob, port: int, connect: ConnectOptions
) -> Iterator[SieveClient | None]:
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
        if exc.code is ErrorCode.CONNREFUSED:
            yield None
            return
        raise
    with client:
        creds = job.source_credentials
        client.authenticate(creds.login, creds.password, creds.authzid)
        yield client

"""Forwarding from an IMAP source: our Sieve script over ManageSieve (RFC 5804), on the
source host; `manual` where the host has no ManageSieve or the login cannot reach the
user's rules."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from migrator import gmail
from migrator.connectors.base import SourceEnd
from migrator.connectors.imap.managesieve import SieveClient
from migrator.connectors.tls import tls_context
from migrator.errors import ErrorCode, LoginFailed, TransientError
from migrator.forwarding import (
    ForwardAction,
    ForwardOutcome,
    ForwardState,
    manual_outcome,
    sieve_remove,
    sieve_set,
    sieve_status,
)
from migrator.model import ConnectOptions, MailboxJob, TokenLogin
from migrator.oauth.login import bearer_login
from migrator.oauth.sasl import BearerExchange, choose_mechanism, initial_response
from migrator.secrets import Secret

DEFAULT_SIEVE_PORT = 4190  # RFC 5804


def forward(action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
    job = source.job
    if _is_gmail(source):
        detail = gmail.forwarding_steps(action.value, job.source_identity, job.target_identity)
        return ForwardOutcome(ForwardState.MANUAL, "manual", job.target_identity, detail)
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


def _is_gmail(source: SourceEnd) -> bool:
    """A Gmail source (`--source-type gmail`, or Google's IMAP host): no ManageSieve."""
    settings = source.settings
    forced = isinstance(settings, gmail.GmailSettings) and settings.forced
    host = source.job.source_server.host.lower().rstrip(".")
    return forced or host in gmail.GMAIL_HOSTS


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
        if isinstance(creds, TokenLogin):
            _token_login(client, creds, job.source_server.host, port, what)
        else:
            client.authenticate(creds.login, creds.password, creds.authzid)
        yield client


def _token_login(client: SieveClient, login: TokenLogin, host: str, port: int, what: str) -> None:
    mechanism = choose_mechanism(client.sasl_mechanisms())
    if mechanism is None:
        raise LoginFailed(
            f"{what}: the ManageSieve server offers neither OAUTHBEARER nor XOAUTH2: "
            "it takes no OAuth 2.0 token"
        )

    def attempt(token: Secret) -> str | None:
        initial = initial_response(mechanism, login.login, token.reveal(), host, port)
        return client.authenticate_bearer(mechanism, BearerExchange(mechanism, initial))

    bearer_login(login, attempt, protocol="sieve", where=what)

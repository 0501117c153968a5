"""exchangelib Accounts for the test server, with a fixed server version so nothing probes."""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from exchangelib import (
    BASIC,
    DELEGATE,
    IMPERSONATION,
    Account,
    Build,
    Configuration,
    Credentials,
    Version,
)
from exchangelib.protocol import FailFast, Protocol, RetryPolicy

from .server import SERVER_VERSION, EwsServer


def ews_config(
    server: EwsServer,
    user: str,
    password: str,
    *,
    retry_policy: RetryPolicy | None = None,
    **kw: Any,
) -> Configuration:
    """Configuration for ``server``: Basic auth, our fixed version (no probing), FailFast unless
    a ``retry_policy`` such as ``FaultTolerance(max_wait=10)`` is given."""
    config = Configuration(
        service_endpoint=server.url,
        credentials=Credentials(user, password),
        auth_type=BASIC,
        version=Version(build=Build(*SERVER_VERSION[:4])),
        retry_policy=retry_policy or FailFast(),
        **kw,
    )
    # exchangelib caches one Protocol (sessions, retry policy) per endpoint and credentials for
    # the whole process; a later server may reuse this port, so forget it when the server stops.
    server.on_stop.append(lambda: _forget(config))
    return config


def _forget(config: Configuration) -> None:
    with suppress(KeyError):
        protocol, _ = Protocol[config]
        del Protocol[config]
        if not isinstance(protocol, Exception):
            protocol.close()


def ews_account(
    server: EwsServer,
    smtp: str,
    *,
    password: str,
    impersonate: str | None = None,
    retry_policy: RetryPolicy | None = None,
    **config: Any,
) -> Account:
    """An Account for mailbox ``smtp``. With ``impersonate`` (the service account's own address),
    log in as that account and impersonate ``smtp``; otherwise log in as ``smtp`` (or, with
    delegate rights, as ``config['user']``)."""
    login = impersonate or config.pop("user", smtp)
    return Account(
        primary_smtp_address=smtp,
        config=ews_config(server, login, password, retry_policy=retry_policy, **config),
        autodiscover=False,
        access_type=IMPERSONATION if impersonate else DELEGATE,
        default_timezone=None,
    )

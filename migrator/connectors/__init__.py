"""The registry of connectors: one line per protocol.

A connector package holds everything of one protocol (its library, its adapters, its
options and extra steps) and exposes `CONNECTOR`; the rest of migrator finds it here by
the kind an operator names (`--source-type`, `--target`) or by the protocol of a
SourceServer.  Packages are imported when first asked for, so a run that never meets
Exchange never imports exchangelib.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import NamedTuple

from migrator.connectors.base import Connector, Role
from migrator.errors import ConfigError
from migrator.model import TlsMode


class _Entry(NamedTuple):
    kind: str  # what the operator names
    protocol: str  # ServerAddress.protocol of its servers
    module: str  # the package, exposing CONNECTOR (or "package:NAME")
    roles: frozenset[Role]


_BOTH = frozenset({Role.SOURCE, Role.TARGET})
_SOURCE = frozenset({Role.SOURCE})

REGISTRY = (
    _Entry("imap", "imap", "migrator.connectors.imap", _BOTH),
    _Entry("gmail", "imap", "migrator.connectors.imap:GMAIL", _SOURCE),
    _Entry("pop", "pop3", "migrator.connectors.pop3", _SOURCE),
    _Entry("ews", "ews", "migrator.connectors.ews", _BOTH),
    _Entry("graph", "graph", "migrator.connectors.graph", _BOTH),
    _Entry("maildir", "maildir", "migrator.connectors.local:MAILDIR", _SOURCE),
    _Entry("mbox", "mbox", "migrator.connectors.local:MBOX", _SOURCE),
)


def connector(kind: str) -> Connector:
    """The connector an operator names; ConfigError for one that does not exist."""
    for entry in REGISTRY:
        if entry.kind == kind:
            return _load(entry)
    raise ConfigError(f"no connector {kind!r}: one of {', '.join(kinds(None))}")


def by_protocol(protocol: str) -> Connector:
    """The connector whose servers speak `protocol` (ServerAddress.protocol)."""
    for entry in REGISTRY:
        if entry.protocol == protocol:
            return _load(entry)
    raise ConfigError(f"unknown protocol {protocol!r}: no connector speaks it")


def kinds(role: Role | None) -> list[str]:
    """The kinds that can play `role` (every kind for None), in registry order."""
    return [e.kind for e in REGISTRY if role is None or role in e.roles]


def schemes(protocol: str) -> Mapping[str, tuple[TlsMode, int]]:
    """The SourceServer schemes of `protocol`, with the TLS mode and port each means."""
    return by_protocol(protocol).schemes


def _load(entry: _Entry) -> Connector:
    module, _, name = entry.module.partition(":")
    found: Connector = getattr(importlib.import_module(module), name or "CONNECTOR")
    return found

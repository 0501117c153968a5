"""The one entry point the runner calls for a local source."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from migrator.batch import MailboxJob
from migrator.connectors.local.maildirsource import MaildirSource
from migrator.connectors.local.mboxsource import MboxSource
from migrator.connectors.local.settings import LocalSettings
from migrator.errors import ConfigError
from migrator.sources.base import MailboxSource


def open_local_source(
    kind: str, job: MailboxJob, settings: Mapping[str, Any] | None
) -> MailboxSource:
    """The source for `kind` ("maildir" or "mbox") at the job's path, with the settings
    its payload carries (LocalSettings.to_json); refuses one without them."""
    if settings is None:
        raise ConfigError(f"a {kind} source needs --source-root in its payload")
    local = LocalSettings.from_json(settings)
    if kind == "maildir":
        return MaildirSource(job, local)
    if kind == "mbox":
        return MboxSource(job, local)
    raise ConfigError(f"unknown local source type {kind!r}")

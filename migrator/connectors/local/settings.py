"""What a job carries for a local source, beside its path: the root the operator
allowed (`--source-root`) and how its mbox files escape "From " lines."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from migrator.secrets import Secret


# (str, Enum) as the rest of migrator has it; StrEnum would change str() and f-strings.
class MboxFormat(str, enum.Enum):  # noqa: UP042
    """How a body line that starts with "From " was kept apart from the From_ line that
    starts a message.  mboxrd: every line matching `>*From ` got one more ">", so reading
    takes one off each (exact).  mboxo: only `From ` got a ">", so reading takes the ">"
    off `>From ` (ambiguous: a body line that was `>From ` comes back as `From `)."""

    MBOXRD = "mboxrd"
    MBOXO = "mboxo"


@dataclass(frozen=True)
class LocalSettings:
    root: str  # --source-root, as the real path it had where the batch was enqueued
    mbox_format: MboxFormat = MboxFormat.MBOXRD

    def to_json(self) -> dict[str, Any]:
        return {"root": self.root, "mbox_format": self.mbox_format.value}

    # -- connectors.base.Settings: no secret; the whole of it bound to the job's seals, so
    # a root or format changed in Redis makes the job fail as tampered.

    @property
    def secret(self) -> Secret | None:
        return None

    def with_secret(self, secret: Secret | None) -> LocalSettings:
        return self

    def bound(self) -> dict[str, object]:
        return dict(self.to_json())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LocalSettings:
        return cls(root=str(data["root"]), mbox_format=MboxFormat(data["mbox_format"]))

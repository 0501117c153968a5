"""What the fault scenarios share: a short late-commit grace, running one mailbox in this
process, and the full comparison of source and target that ends every scenario."""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import celerykit
import support
from ews_server import EwsServer
from servers.dovecot import DEFAULT_USER_PASSWORD, DovecotServer
from support import default_map_target, digest, each_folder, imaps, run_in_process

from migrator.foldermap import default_folder_map
from migrator.prepare import RunOptions

REPO = Path(__file__).resolve().parents[2]


# The faults here come from the test, not from a slow server: a pass that breaks with
# appends in flight need not wait long for a late commit (the scenario that has one says so).
LATE_COMMIT_GRACE = 0.2

# `migrator enqueue` into the test Dovecot: a worker that takes over a killed one's mailbox
# waits the late-commit grace, short here.
enqueue = functools.partial(celerykit.enqueue, grace=LATE_COMMIT_GRACE)

# The `mailbox_pairs` fixture: (source, password, target) triples, each source filled.
MailboxPairs = Callable[..., list[tuple[str, str, str]]]


def run_options(
    source_port: int, target_port: int, ca_file: Path, **kw: object
) -> tuple[RunOptions, str]:
    """Options whose target is Dovecot (master user, SASL PLAIN) on `target_port`, with the
    short late-commit grace, and the SourceServer cell for `source_port`."""
    kw.setdefault("late_commit_grace", LATE_COMMIT_GRACE)
    return support.run_options(target_port, ca_file, **kw), imaps(source_port)


# -- the full comparison ----------------------------------------------------------------


@dataclass(frozen=True)
class ScenarioOutcome:
    scenario: str
    checked: int
    lost: int
    duplicated: int


OUTCOMES: list[ScenarioOutcome] = []


class FaultReport:
    """What a scenario hands in once it has compared source and target."""

    def __init__(self, scenario: str) -> None:
        self.scenario = scenario

    def record(self, checked: int, lost: int, duplicated: int) -> None:
        OUTCOMES.append(ScenarioOutcome(self.scenario, checked, lost, duplicated))


class ExactlyOnce:
    """The end of every scenario: the full comparison, recorded for the summary."""

    def __init__(
        self, report: FaultReport, dovecot: DovecotServer, context: ssl.SSLContext
    ) -> None:
        self._report = report
        self._dovecot = dovecot
        self._context = context

    def __call__(
        self, expected: dict[str, Counter[str]], target_view: dict[str, list[bytes]]
    ) -> int:
        checked, lost, duplicated = compare(expected, target_view)
        self._report.record(checked, lost, duplicated)
        assert (lost, duplicated) == (0, 0), f"{lost} lost, {duplicated} duplicated"
        assert checked > 0
        return checked

    def copied(
        self, source: str, password: str, target: str, *, ews: EwsServer | None = None
    ) -> int:
        """Every message of `source` (logging in with `password`) on the test Dovecot is at
        `target` once: a mailbox there (password DEFAULT_USER_PASSWORD), or on `ews`."""
        return self(
            *source_and_target(
                self._dovecot,
                (source, password),
                (target, DEFAULT_USER_PASSWORD),
                self._context,
                ews=ews,
            )
        )


def stored(
    server: DovecotServer,
    login: str,
    password: str,
    context: ssl.SSLContext,
    *,
    port: int | None = None,
) -> dict[str, list[bytes]]:
    """Every message of every selectable folder, as the server holds it."""
    folders = each_folder(server, login, password, context, ["BODY.PEEK[]"], port=port)
    return {name: [data[b"BODY[]"] for data in fetched] for name, fetched in folders}


def ews_stored(ews: EwsServer, smtp: str) -> dict[str, list[bytes]]:
    """Every message of every mail folder of an Exchange mailbox on the test EWS server, by
    the folder's path below the message folder root ("Inbox", "Archive", "Inbox/Projects")."""
    box = ews.store[smtp]
    top = box.distinguished("msgfolderroot").id
    result: dict[str, list[bytes]] = {}
    for folder in box.folders.values():
        if folder.folder_class not in (None, "IPF.Note"):
            continue
        path, current = [], folder
        while current.parent_id is not None and current.id != top:
            path.append(current.name)
            current = box.folders[current.parent_id]
        if current.id == top and path:
            result["/".join(reversed(path))] = [i.mime for i in box.items_in(folder.id)]
    return result


def leaks(text: str | bytes, secret: str) -> bool:
    """Whether `secret` is in `text` in any form it could take on its way to a log or to Redis:
    as UTF-8 or Latin-1 bytes (HTTP Basic), escaped as JSON ("\\u00e4"), as a Python str
    or bytes repr ("\\xe4", "\\xc3\\xa4"), or any of these base64-encoded inside a longer run
    (an HTTP Basic or SASL PLAIN credential, a MIME part, a Celery message body): its encoding
    at each of the three alignments, less the characters its neighbours share."""
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return any(form in data for form in _forms(secret))


@functools.cache  # the session's scan asks for each password's forms once per file
def _forms(secret: str) -> frozenset[bytes]:
    plain = [secret.encode("utf-8")]
    with contextlib.suppress(UnicodeEncodeError):
        plain.append(secret.encode("latin-1"))
    escaped = [
        json.dumps(secret)[1:-1].encode("ascii"),
        ascii(secret)[1:-1].encode("ascii"),
        repr(secret.encode("utf-8"))[2:-1].encode("ascii"),
    ]
    forms = set(plain + escaped)
    for raw in plain + escaped:
        forms.update(base64.b64encode(b"\0" * k + raw)[4:-4] for k in range(3))
    return frozenset(forms)


def expected_at_target(
    source_view: dict[str, list[bytes]],
    where: Callable[[str], str] | None = None,
) -> dict[str, Counter[str]]:
    """Per target folder, the digests the target must hold: the source's messages, mapped
    by the shipped folder map (or `where`)."""
    where = where or (lambda name: default_map_target(tuple(name.split("/"))))
    expected: dict[str, Counter[str]] = {}
    for name, bodies in source_view.items():
        if bodies:
            expected.setdefault(where(name), Counter()).update(digest(b) for b in bodies)
    return expected


def exchange_folder(source_name: str) -> str:
    """Where the shipped folder map sends a source folder in an Exchange mailbox."""
    return default_folder_map().map(tuple(source_name.split("/"))).display()


def source_and_target(
    dovecot: DovecotServer,
    source: tuple[str, str],
    target: tuple[str, str],
    context: ssl.SSLContext,
    *,
    ews: EwsServer | None = None,
) -> tuple[dict[str, Counter[str]], dict[str, list[bytes]]]:
    """(what the target must hold, what it holds) for a source (login, password) on the
    test Dovecot and a target (login, password) there, or on `ews` when given."""
    source_view = stored(dovecot, *source, context)
    if ews is not None:
        return expected_at_target(source_view, exchange_folder), ews_stored(ews, target[0])
    return expected_at_target(source_view), stored(dovecot, *target, context)


def compare(
    expected: dict[str, Counter[str]], target_view: dict[str, list[bytes]]
) -> tuple[int, int, int]:
    """(messages checked, lost, duplicated or unexpected) between what the target must hold
    and what it holds, folder by folder, by the bytes of each message."""
    got = {name: Counter(digest(b) for b in bodies) for name, bodies in target_view.items()}
    checked = sum(sum(c.values()) for c in expected.values())
    lost = sum(sum((c - got.get(name, Counter())).values()) for name, c in expected.items())
    extra = sum(sum((c - expected.get(name, Counter())).values()) for name, c in got.items())
    return checked, lost, extra


__all__ = [
    "OUTCOMES",
    "REPO",
    "ExactlyOnce",
    "FaultReport",
    "MailboxPairs",
    "compare",
    "digest",
    "enqueue",
    "ews_stored",
    "expected_at_target",
    "leaks",
    "run_in_process",
    "run_options",
    "stored",
]

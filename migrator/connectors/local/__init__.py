"""Local sources: mailboxes restored from files below `--source-root` (`--source-type
maildir` or `mbox`), read through the same `MailboxSource` protocol as a server.

    paths.py          the SourceServer cell as a path, kept below the root
    settings.py       what a job carries for a local source: the root, the mbox format
    enqueue.py        what the enqueuing side does: each row's path resolved and checked
    refs.py           what both formats share: stable ids, dates, header blocks
    maildir.py        Maildir names, flags, keywords and folders (pure, and the tree walk)
    mbox.py           mbox From_ lines, escaping, status headers, the streaming index (pure)
    mboxtree.py       the folders of a directory of mbox files (Thunderbird, Apple Mail)
    maildirsource.py  MaildirSource
    mboxsource.py     MboxSource

MAILDIR and MBOX are the two connectors the registry names.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from migrator.connectors.base import BaseConnector, Role, Settings, SourceEnd
from migrator.connectors.local.enqueue import resolve_batch, source_root
from migrator.connectors.local.paths import relative_path
from migrator.connectors.local.settings import LocalSettings, MboxFormat
from migrator.errors import ConfigError
from migrator.forwarding import ForwardAction, ForwardOutcome, manual_outcome
from migrator.model import BatchResult, ConnectOptions, ServerAddress, TlsMode
from migrator.sources.base import MailboxSource


class LocalConnector(BaseConnector):
    """Files below --source-root: a source only, with no login and no forwarding."""

    roles = frozenset({Role.SOURCE})
    needs_login = False
    receives_mail = False

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.protocol = kind

    def parse_address(self, text: str) -> ServerAddress | None:
        return ServerAddress(relative_path(text), 0, TlsMode.IMPLICIT, protocol=self.kind)

    def add_arguments(self, parser: argparse.ArgumentParser, roles: frozenset[Role]) -> None:
        if Role.SOURCE not in roles:
            return
        g = parser.add_argument_group("local sources (maildir, mbox)")
        g.add_argument(
            "--source-root",
            metavar="DIR",
            help="maildir, mbox: the directory every SourceServer path lies below (nothing "
            "outside it is read)",
        )
        g.add_argument(
            "--mbox-format",
            choices=[f.value for f in MboxFormat],
            default=MboxFormat.MBOXRD.value,
            help="mbox: how body lines starting with 'From ' were escaped (default mboxrd; "
            "mboxo also turns a body line '>From ' into 'From ')",
        )

    def check_batch(self, result: BatchResult, args: argparse.Namespace) -> BatchResult:
        return resolve_batch(result, source_root(args.source_root, self.kind))

    def settings(
        self, args: argparse.Namespace, role: Role, connect: ConnectOptions
    ) -> Settings | None:
        if getattr(args, "forward_after_copy", False):
            raise ConfigError(
                f"--forward-after-copy: a {self.kind} source is files that receive no "
                "mail; there is nothing to forward from"
            )
        root = source_root(args.source_root, self.kind)
        return LocalSettings(root=root, mbox_format=MboxFormat(args.mbox_format))

    def settings_from_json(self, data: Mapping[str, Any], connect: ConnectOptions) -> Settings:
        return LocalSettings.from_json(data)

    def open_source(self, end: SourceEnd) -> MailboxSource:
        settings = end.settings
        if not isinstance(settings, LocalSettings):
            raise ConfigError(f"a {self.kind} source needs --source-root in its job")
        if self.kind == "maildir":
            from migrator.connectors.local.maildirsource import MaildirSource

            return MaildirSource(end.job, settings)
        from migrator.connectors.local.mboxsource import MboxSource

        return MboxSource(end.job, settings)

    def forward(self, action: ForwardAction, source: SourceEnd) -> ForwardOutcome:
        return manual_outcome(
            action,
            source.job,
            f"a {self.kind} source is files that receive no mail: there is nothing to forward",
        )


MAILDIR = LocalConnector("maildir")
MBOX = LocalConnector("mbox")

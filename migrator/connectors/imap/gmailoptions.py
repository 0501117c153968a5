"""Gmail's options (`--gmail-*`), and opening an IMAP end as Gmail where it is: a source
that announces X-GM-EXT-1 (or `--source-type gmail`) is read by GmailSource with its
download cap; a target that announces it has its upload cap kept (GmailTarget)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from migrator import gmail, mailboxid
from migrator.argtypes import Amount, Count
from migrator.connectors.base import Role, SourceEnd, TargetEnd
from migrator.connectors.imap.gmail import GmailSource
from migrator.connectors.imap.source import ImapSource
from migrator.connectors.imap.target import ImapTarget
from migrator.errors import CapReached, ErrorCode, PermanentError
from migrator.foldermap import TargetFolder
from migrator.gmail import ByteMeter, ByteMeters, Direction, GmailSettings, LabelMode
from migrator.recognition import TargetCopy
from migrator.sources.base import MailboxSource
from migrator.targets.base import AppendItem, MailboxTarget, Outcome, QuotaInfo

MEGABYTES = Count(1, 10_000_000)
WINDOW = Amount(high=7 * gmail.DAY)


def add_gmail_arguments(parser: argparse.ArgumentParser, roles: frozenset[Role]) -> None:
    if Role.SOURCE not in roles:
        return
    g = parser.add_argument_group("Gmail and Google Workspace (an IMAP server with X-GM-EXT-1)")
    g.add_argument(
        "--gmail-labels",
        choices=[m.value for m in LabelMode],
        default=LabelMode.RULE.value,
        help="rule (default): each message once, in the Inbox if labelled so, else Sent, "
        "else the first user label by name, else Archive, its other labels as keywords or "
        "categories; copies: one copy in each label's folder",
    )
    g.add_argument(
        "--gmail-include-spam-trash",
        action="store_true",
        help="copy Gmail's Spam and Trash too (to the target's Junk and Trash)",
    )
    g.add_argument(
        "--gmail-download-cap",
        type=MEGABYTES,
        default=gmail.DOWNLOAD_CAP // gmail.MB,
        metavar="MB",
        help="MB read from each Gmail mailbox per rolling day, at most (default 2500); "
        "the mailbox pauses before it and resumes by itself",
    )
    g.add_argument(
        "--gmail-upload-cap",
        type=MEGABYTES,
        default=gmail.UPLOAD_CAP // gmail.MB,
        metavar="MB",
        help="MB written to each Gmail target mailbox per rolling day (default 500)",
    )
    g.add_argument(
        "--gmail-cap-window",
        type=WINDOW,
        default=gmail.DAY,
        metavar="SECONDS",
        help=argparse.SUPPRESS,  # Gmail's day; shorter only to watch a pause end
    )


def gmail_settings(args: argparse.Namespace, role: Role, *, forced: bool) -> GmailSettings | None:
    """The Gmail settings a job carries; None where every option is its default (a plain
    IMAP end, whose payload stays as it was)."""
    if not hasattr(args, "gmail_labels"):
        return GmailSettings(forced=True) if forced else None
    settings = GmailSettings(
        labels=LabelMode(args.gmail_labels),
        include_spam_trash=bool(args.gmail_include_spam_trash),
        download_cap=int(args.gmail_download_cap) * gmail.MB,
        upload_cap=int(args.gmail_upload_cap) * gmail.MB,
        cap_window=float(args.gmail_cap_window),
        forced=forced,
    )
    return None if settings == GmailSettings() else settings


def _settings(end: SourceEnd | TargetEnd) -> GmailSettings:
    return end.settings if isinstance(end.settings, GmailSettings) else GmailSettings()


def _meter(
    meters: ByteMeters | None, direction: Direction, mailbox: str, settings: GmailSettings
) -> ByteMeter | None:
    if meters is None:
        return None
    return meters.meter(direction, mailbox, settings.cap(direction), settings.cap_window)


def open_imap_source(end: SourceEnd) -> MailboxSource:
    source = ImapSource(end.job, end.connect, fetch_window=end.fetch_window)
    settings = _settings(end)
    if not source.has_capability(gmail.CAPABILITY):
        if not settings.forced:
            return source
        source.close()
        raise PermanentError(
            f"source mailbox {end.job.source_identity}: --source-type gmail, but the server "
            f"does not announce {gmail.CAPABILITY}: it gives no Gmail message ids or labels",
            code=ErrorCode.PROTOCOL,
        )
    mailbox = mailboxid.source_mailbox(end.job)
    return GmailSource(source, settings, _meter(end.meters, Direction.DOWNLOAD, mailbox, settings))


def open_imap_target(end: TargetEnd) -> MailboxTarget:
    target = ImapTarget(end.server, end.credentials, end.identity, end.connect)
    if end.meters is None or not target.has_capability(gmail.CAPABILITY):
        return target
    settings = _settings(end)
    mailbox = mailboxid.target_mailbox(end.server, end.identity)
    meter = end.meters.meter(Direction.UPLOAD, mailbox, settings.upload_cap, settings.cap_window)
    return GmailTarget(target, meter, settings)


class GmailTarget:
    """An IMAP target that is Gmail (MailboxTarget): each batch of appends is counted
    against the mailbox's daily upload cap first, whole; a batch past the cap is not
    sent, and the mailbox pauses (CapReached) until it fits."""

    def __init__(self, target: ImapTarget, meter: ByteMeter, settings: GmailSettings) -> None:
        self._target = target
        self._meter = meter
        self._settings = settings
        self.batch_size = target.batch_size
        self.throttled_seconds = target.throttled_seconds

    def open_folder(self, folder: TargetFolder) -> str:
        return self._target.open_folder(folder)

    def index(self, name: str) -> list[TargetCopy]:
        return self._target.index(name)

    def digests(self, name: str, copies: Sequence[TargetCopy]) -> dict[str, str]:
        return self._target.digests(name, copies)

    def quota(self) -> QuotaInfo:
        return self._target.quota()

    def append_batch(self, items: Sequence[AppendItem]) -> list[Outcome]:
        sizes = [len(item.message) for item in items]
        _, resume_at = self._meter.reserve(sizes, whole=True)
        if resume_at is not None:
            raise CapReached(
                f"target mailbox: Gmail's daily upload cap "
                f"({self._settings.upload_cap // gmail.MB} MB) reached",
                resume_at,
            )
        return self._target.append_batch(items)

    def session(self) -> GmailTarget:
        return GmailTarget(self._target.session(), self._meter, self._settings)

    def close(self) -> None:
        self._target.close()

"""The options of the commands that read a batch: where the mail is, how to log in,
how to copy, and each connector's own.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from migrator import connectors
from migrator.argtypes import CONNECTIONS, GRACE, PORT, TIMEOUT, WORKERS
from migrator.batch import AccessMethod
from migrator.connectors.base import Role
from migrator.copier import CONNECTIONS_PER_MAILBOX, LATE_COMMIT_GRACE
from migrator.errors import ConfigError
from migrator.forwardjobs import DEFAULT_SIEVE_PORT
from migrator.localredis import REDIS_URL_ENV as REDIS_URL_ENV  # re-exported
from migrator.notify import NotifySettings
from migrator.oauth.options import add_oauth_arguments
from migrator.secrets import (
    Secret,
)

ADMIN_PASSWORD_ENV = "MIGRATOR_ADMIN_PASSWORD"
TARGET_ADMIN_PASSWORD_ENV = "MIGRATOR_TARGET_ADMIN_PASSWORD"


def batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "batch_csv",
        type=Path,
        help="the batch: SourceIdentity,SourceServer,SourceLoginID,SourcePassword,"
        "TargetIdentity (and optional columns; see the README)",
    )
    p.add_argument(
        "--method",
        required=True,
        choices=[m.value for m in AccessMethod],
        help="how the source is logged in to: individual (each row's login and password), "
        "combined (admin and user in one login), proxyauth (the admin acting as the user), "
        "rootfolder (the admin, below each row's root folder), manual (the row's login as is)",
    )
    p.add_argument(
        "--source-type",
        choices=connectors.kinds(Role.SOURCE),
        default="imap",
        help="what the source servers speak (SourceServer pop3s://host for POP3 over TLS)",
    )
    p.add_argument("--admin", help="source admin login (combined, rootfolder, proxyauth)")
    p.add_argument(
        "--admin-password-file", type=Path, help=f"file holding it (or ${ADMIN_PASSWORD_ENV})"
    )
    p.add_argument(
        "--combined-template",
        default="{admin}/{user}",
        help="how the admin and the user combine into one login, e.g. '{user}*{admin}' for Dovecot",
    )
    add_connector_arguments(p, frozenset({Role.SOURCE}))
    add_oauth_arguments(p, "source")  # and the provider's options, which both ends share


def run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `run` and `enqueue` (and velocity runs)."""
    _target_arguments(p)
    _connection_arguments(p)
    _copy_arguments(p)
    add_connector_arguments(p, frozenset({Role.TARGET}))  # the source's: batch_arguments
    add_oauth_arguments(p, "target")
    _forwarding_arguments(p)
    _rewrite_arguments(p)
    _notify_arguments(p)


def _target_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--target",
        choices=connectors.kinds(Role.TARGET),
        default="imap",
        help="what the target server speaks (default imap)",
    )
    p.add_argument(
        "--target-server",
        help="IMAP: host or URL; EWS: host or https:// URL; Graph: its root "
        "(default https://graph.microsoft.com)",
    )
    p.add_argument(
        "--target-method",
        choices=["combined", "proxyauth", "individual"],
        default="proxyauth",
        help="individual: each row's TargetLoginID and TargetPassword (no target admin)",
    )
    p.add_argument("--target-admin", help="the admin (IMAP) or service account (EWS)")
    p.add_argument(
        "--target-admin-password-file",
        type=Path,
        help=f"file holding it (or ${TARGET_ADMIN_PASSWORD_ENV})",
    )
    p.add_argument(
        "--target-combined-template",
        default="{admin}/{user}",
        help="--target-method combined: how the admin and the user make one login",
    )


def _copy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quotas", type=Path, help="activation CSV with MailboxQuotaSize in bytes")
    p.add_argument("--foldermap", type=Path, help="folder map XML (default: config/foldermap.xml)")
    p.add_argument("--since", type=date_argument, help="copy mail from this date (YYYY-MM-DD)")
    p.add_argument("--until", type=date_argument, help="copy mail before this date (YYYY-MM-DD)")
    p.add_argument(
        "--late-commit-grace",
        type=GRACE,
        default=LATE_COMMIT_GRACE,
        metavar="SECONDS",
        help="after a pass broke with appends in flight, wait this long before looking at "
        f"the target again, so a late commit is not copied twice (default {LATE_COMMIT_GRACE:g})",
    )
    p.add_argument("--workers", type=WORKERS, default=4, help="in-process pool size (no Redis URL)")
    p.add_argument(
        "--batch-id", help="name the batch (default: a new id); a name in use is refused"
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="with --batch-id: replace the batch of that name (its rows and event logs; "
        "checkpoints are the mailboxes', so nothing copied is copied again)",
    )


def _connection_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ca-file", help="CA bundle for servers with a private CA")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--allow-plaintext", action="store_true", help="allow servers without STARTTLS")
    p.add_argument(
        "--timeout",
        type=TIMEOUT,
        default=60.0,
        metavar="SECONDS",
        help="seconds a server may take to connect or to answer (default 60)",
    )
    p.add_argument(
        "--max-connections-per-server",
        type=CONNECTIONS,
        default=8,
        metavar="N",
        help="connections to each source server at once, across every worker (default 8)",
    )
    p.add_argument(
        "--connections-per-mailbox",
        type=CONNECTIONS,
        default=CONNECTIONS_PER_MAILBOX,
        metavar="N",
        help="copy one mailbox over up to N connections to each side, where both servers "
        "allow more than one and --max-connections-per-server has room "
        f"(default {CONNECTIONS_PER_MAILBOX})",
    )


def _forwarding_arguments(p: argparse.ArgumentParser) -> None:
    forward = p.add_argument_group("forwarding (off unless asked for)")
    forward.add_argument(
        "--forward-after-copy",
        action="store_true",
        help="when a mailbox is done, forward its new mail to the target (as `forwarding set`)",
    )
    sieve_port_argument(forward)


def _rewrite_arguments(p: argparse.ArgumentParser) -> None:
    rewrite = p.add_argument_group("address rewriting (off unless asked for)")
    rewrite.add_argument(
        "--rewrite",
        action="store_true",
        help="rewrite address headers: the batch's SourceIdentity -> TargetIdentity pairs",
    )
    rewrite.add_argument(
        "--rewrite-x500",
        type=Path,
        help="CSV LegacyExchangeDN,PrimarySmtpAddress (implies --rewrite)",
    )
    rewrite.add_argument(
        "--rewrite-domain",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="domain pair, repeatable (implies --rewrite)",
    )
    rewrite.add_argument(
        "--keep-original-headers",
        action="store_true",
        help="add X-Original-<Header> beside each rewritten header",
    )


def _notify_arguments(p: argparse.ArgumentParser) -> None:
    notify = p.add_argument_group("notifications when the batch ends (off unless asked for)")
    notify.add_argument(
        "--notify-webhook",
        metavar="URL",
        help="POST a JSON summary here when the batch ends (kept sealed like a password)",
    )
    notify.add_argument(
        "--notify-email",
        action="append",
        default=[],
        metavar="ADDRESS",
        help="e-mail a summary here when the batch ends; repeatable",
    )
    notify.add_argument(
        "--notify-each-mailbox",
        action="store_true",
        help="also POST to the webhook as each mailbox ends",
    )
    notify.add_argument(
        "--smtp-server",
        default="localhost:25",
        metavar="HOST:PORT",
        help="the relay the workers send e-mail through (default localhost:25; a login from "
        "$MIGRATOR_SMTP_USER and $MIGRATOR_SMTP_PASSWORD where it wants one)",
    )
    notify.add_argument(
        "--smtp-from",
        default="migrator@localhost",
        metavar="ADDRESS",
        help="the sender of the e-mail (default migrator@localhost)",
    )
    notify.add_argument("--smtp-starttls", action="store_true", help="STARTTLS to the relay")


def notify_settings(args: argparse.Namespace) -> NotifySettings:
    return NotifySettings(
        webhook=Secret(args.notify_webhook) if args.notify_webhook else None,
        emails=tuple(args.notify_email),
        each_mailbox=args.notify_each_mailbox,
        smtp_server=args.smtp_server,
        smtp_from=args.smtp_from,
        smtp_starttls=args.smtp_starttls,
    )


def add_connector_arguments(
    p: argparse.ArgumentParser, roles: frozenset[Role] = frozenset(Role)
) -> None:
    """Every connector's own options for the ends a command has (a group each)."""
    seen: set[type] = set()
    for kind in connectors.kinds(None):
        connector = connectors.connector(kind)
        if type(connector) not in seen:  # kinds of one connector share its options
            seen.add(type(connector))
            connector.add_arguments(p, roles)


def sieve_port_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--sieve-port",
        type=PORT,
        default=DEFAULT_SIEVE_PORT,
        help="ManageSieve port on each IMAP source host (STARTTLS), for forwarding",
    )


def date_argument(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def password_from(path: Path | None, env: str, what: str) -> Secret | None:
    if path is not None:
        try:
            return Secret(path.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise ConfigError(f"{what} password file {path}: {exc.strerror}") from None
    value = os.environ.get(env)
    return Secret(value) if value else None

"""The `migrator` command: validate, run, enqueue, status, resume, keygen."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from migrator.argtypes import CONNECTIONS, GRACE, PORT, TIMEOUT, WORKERS
from migrator.batch import (
    AccessMethod,
    AdminLogin,
    BatchResult,
    MailboxJob,
    parse_server,
    read_batch_file,
)
from migrator.connectors.local.enqueue import resolve_batch, source_root
from migrator.connectors.local.paths import LOCAL_KINDS
from migrator.connectors.local.settings import LocalSettings, MboxFormat
from migrator.copier import CONNECTIONS_PER_MAILBOX, LATE_COMMIT_GRACE
from migrator.display import result_table, status_json, status_table, watch
from migrator.errors import ConfigError, MigrationError
from migrator.ews import add_ews_arguments, endpoint_address
from migrator.ews import source_settings as ews_source_settings
from migrator.ews import target_settings as ews_target_settings
from migrator.foldermap import load_folder_map
from migrator.forwardjobs import DEFAULT_SIEVE_PORT
from migrator.imapconn import ConnectOptions
from migrator.localredis import REDIS_URL_ENV as REDIS_URL_ENV  # re-exported
from migrator.localredis import PrivateRedis, shared_url, state_dir
from migrator.quotas import read_quota_file
from migrator.report import MailboxState
from migrator.rewrite import RewriteMaps, load_x500_map, parse_domain_pair
from migrator.runner import (
    MailboxBusy,
    RunOptions,
    TargetSpec,
    build_jobs,
    execute_job,
    lock_ttl,
    rewrite_meta,
)
from migrator.secrets import (
    SECRET_KEY_ENV,
    Secret,
    SecretBox,
    install_redaction,
    new_key,
    redact,
)
from migrator.state import MailboxStatus, NewJob, StateStore

ADMIN_PASSWORD_ENV = "MIGRATOR_ADMIN_PASSWORD"
TARGET_ADMIN_PASSWORD_ENV = "MIGRATOR_TARGET_ADMIN_PASSWORD"

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it
# --source-type -> SourceServer scheme (maildir, mbox: a path below --source-root)
SOURCE_PROTOCOLS = {
    "imap": "imap",
    "pop": "pop3",
    "ews": "ews",
    "maildir": "maildir",
    "mbox": "mbox",
}

# soft_wrap: one problem stays one line when piped into grep or a script.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # imapclient logs every line and literal at DEBUG (message bodies): never let -v show them.
    logging.getLogger("imapclient").setLevel(logging.INFO)
    install_redaction(logging.getLogger())
    try:
        return int(args.func(args))
    except MigrationError as exc:
        err_console.print("[red]error:[/]", escape(redact(str(exc))), highlight=False)
        return EXIT_BAD_INPUT
    except Interrupted as exc:  # `velocity run` (`run` and `resume` catch their own)
        err_console.print(str(exc), highlight=False, markup=False)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED


class Interrupted(Exception):
    """Ctrl-C stopped this machine's pool, once what was in flight was checkpointed."""

    def __init__(self, batch_id: str, rows: list[MailboxStatus]) -> None:
        super().__init__(f"interrupted: `migrator resume {batch_id}` goes on from here")
        self.batch_id = batch_id
        self.rows = rows


# -- argument parsing -----------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="migrator", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    validate = sub.add_parser("validate", help="check a batch CSV and name each bad line")
    _batch_arguments(validate)
    validate.set_defaults(func=cmd_validate)

    for name, func, text in (
        ("run", cmd_run, "run a batch on this machine and wait"),
        ("enqueue", cmd_enqueue, "enqueue a batch for Celery workers; print its id"),
    ):
        command = sub.add_parser(name, help=text)
        _batch_arguments(command)
        _run_arguments(command)
        command.set_defaults(func=func)

    status = sub.add_parser("status", help="the table of a batch")
    status.add_argument("batch")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    resume = sub.add_parser("resume", help="re-enqueue every mailbox of a batch not done")
    resume.add_argument("batch")
    resume.add_argument(
        "--workers", type=WORKERS, default=4, help="in-process pool size (no Redis URL)"
    )
    resume.add_argument("--no-wait", action="store_true", help="with Celery: do not wait")
    resume.set_defaults(func=cmd_resume)

    # Imported here: these commands build on this module's run machinery.
    from migrator.velocity.cli import add_velocity_commands

    add_velocity_commands(sub)
    from migrator.forwardcli import add_forwarding_commands

    add_forwarding_commands(sub)

    keygen = sub.add_parser("keygen", help=f"print a new key for {SECRET_KEY_ENV}")
    keygen.set_defaults(func=lambda _a: print(new_key()) or 0)
    return parser


def _batch_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("batch_csv", type=Path)
    p.add_argument("--method", required=True, choices=[m.value for m in AccessMethod])
    p.add_argument(
        "--source-type",
        choices=sorted(SOURCE_PROTOCOLS),
        default="imap",
        help="what the source servers speak (SourceServer pop3s://host for POP3 over TLS); "
        "maildir, mbox: SourceServer is a path below --source-root",
    )
    # Local sources (connectors/local).
    p.add_argument(
        "--source-root",
        metavar="DIR",
        help="maildir, mbox: the directory every SourceServer path lies below (nothing "
        "outside it is read)",
    )
    p.add_argument(
        "--mbox-format",
        choices=[f.value for f in MboxFormat],
        default=MboxFormat.MBOXRD.value,
        help="mbox: how body lines starting with 'From ' were escaped (default mboxrd; "
        "mboxo also turns a body line '>From ' into 'From ')",
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


def _run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=["imap", "ews"], default="imap")
    p.add_argument("--target-server", help="IMAP: host or URL; EWS: host or https:// URL")
    p.add_argument("--target-method", choices=["combined", "proxyauth"], default="proxyauth")
    p.add_argument("--target-admin", help="the admin (IMAP) or service account (EWS)")
    p.add_argument(
        "--target-admin-password-file",
        type=Path,
        help=f"file holding it (or ${TARGET_ADMIN_PASSWORD_ENV})",
    )
    p.add_argument("--target-combined-template", default="{admin}/{user}")
    p.add_argument("--quotas", type=Path, help="activation CSV with MailboxQuotaSize in bytes")
    p.add_argument("--foldermap", type=Path, help="folder map XML (default: config/foldermap.xml)")
    p.add_argument("--since", type=_date, help="copy mail from this date (YYYY-MM-DD)")
    p.add_argument("--until", type=_date, help="copy mail before this date (YYYY-MM-DD)")
    p.add_argument("--ca-file", help="CA bundle for servers with a private CA")
    p.add_argument("--insecure", action="store_true", help="do not verify TLS certificates")
    p.add_argument("--allow-plaintext", action="store_true", help="allow servers without STARTTLS")
    p.add_argument(
        "--timeout",
        type=TIMEOUT,
        default=60.0,
        metavar="SECONDS",
        help="how long a server may take to answer (default 60)",
    )
    p.add_argument(
        "--late-commit-grace",
        type=GRACE,
        default=LATE_COMMIT_GRACE,
        metavar="SECONDS",
        help="after a pass broke with appends in flight, wait this long before looking at "
        f"the target again, so a late commit is not copied twice (default {LATE_COMMIT_GRACE:g})",
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
    p.add_argument("--workers", type=WORKERS, default=4, help="in-process pool size (no Redis URL)")
    p.add_argument("--batch-id", help="name the batch (default: a new id)")
    add_ews_arguments(p)
    forward = p.add_argument_group("forwarding (off unless asked for)")
    forward.add_argument(
        "--forward-after-copy",
        action="store_true",
        help="when a mailbox is done, forward its new mail to the target (as `forwarding set`)",
    )
    sieve_port_argument(forward)
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


def sieve_port_argument(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    p.add_argument(
        "--sieve-port",
        type=PORT,
        default=DEFAULT_SIEVE_PORT,
        help="ManageSieve port on each IMAP source host (STARTTLS), for forwarding",
    )


def _date(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a date: {text!r}") from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _password(path: Path | None, env: str, what: str) -> Secret | None:
    if path is not None:
        try:
            return Secret(path.read_text(encoding="utf-8").rstrip("\r\n"))
        except OSError as exc:
            raise ConfigError(f"{what} password file {path}: {exc.strerror}") from None
    value = os.environ.get(env)
    return Secret(value) if value else None


def _read_batch(args: argparse.Namespace) -> BatchResult:
    admin = None
    if args.admin:
        password = _password(args.admin_password_file, ADMIN_PASSWORD_ENV, "admin")
        if password is None:
            raise ConfigError(
                "--admin given without a password: "
                f"use --admin-password-file or ${ADMIN_PASSWORD_ENV}"
            )
        admin = AdminLogin(args.admin, password)
    result = read_batch_file(
        args.batch_csv,
        AccessMethod(args.method),
        admin=admin,
        combined_template=args.combined_template,
        protocol=SOURCE_PROTOCOLS[args.source_type],
    )
    if args.source_type in LOCAL_KINDS:  # each row's path resolved below the root
        return resolve_batch(result, source_root(args.source_root, args.source_type))
    if args.source_root:
        raise ConfigError("--source-root is for --source-type maildir or mbox")
    return result


def _local_settings(args: argparse.Namespace) -> LocalSettings | None:
    """A local source's root and format, for the payloads (connectors/local)."""
    if args.source_type not in LOCAL_KINDS:
        return None
    if args.forward_after_copy:
        raise ConfigError(
            f"--forward-after-copy: a {args.source_type} source is files that receive no "
            "mail; there is nothing to forward from"
        )
    root = source_root(args.source_root, args.source_type)
    return LocalSettings(root=root, mbox_format=MboxFormat(args.mbox_format))


def _print_problems(result: BatchResult, path: Path) -> None:
    for problem in result.problems:
        err_console.print(f"{path}:{problem}", highlight=False, markup=False)


# -- commands -------------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    result = _read_batch(args)
    _print_problems(result, args.batch_csv)
    bad_lines = sorted({p.line for p in result.problems})
    console.print(
        f"{len(result.jobs)} good rows, {len(bad_lines)} bad rows"
        + (f" (lines {', '.join(map(str, bad_lines))})" if bad_lines else ""),
        highlight=False,
    )
    return EXIT_BAD_INPUT if result.problems else 0


def _prepare(args: argparse.Namespace, box: SecretBox) -> tuple[str, dict[str, str], list[NewJob]]:
    result = _read_batch(args)
    if result.problems:
        _print_problems(result, args.batch_csv)
        raise ConfigError(
            f"{args.batch_csv}: {len(result.problems)} problems; nothing was enqueued "
            "(`migrator validate` lists them)"
        )
    target_password = _password(
        args.target_admin_password_file, TARGET_ADMIN_PASSWORD_ENV, "target admin"
    )
    oauth = args.target == "ews" and args.ews_auth == "oauth"  # a client secret, no login
    if target_password is None and not oauth:
        raise ConfigError(
            "no target admin password: "
            f"use --target-admin-password-file or ${TARGET_ADMIN_PASSWORD_ENV}"
        )
    if not (args.target_admin or oauth):
        raise ConfigError("--target-admin is required")
    connect = ConnectOptions(
        timeout=args.timeout,
        ca_file=args.ca_file,
        insecure=args.insecure,
        allow_plaintext=args.allow_plaintext,
    )
    target_ews = ews_target_settings(args, connect) if args.target == "ews" else None
    if target_ews is not None:
        target_server = endpoint_address(target_ews.endpoint)
    elif not args.target_server:
        raise ConfigError("--target-server is required")
    else:
        try:
            target_server = parse_server(args.target_server)
        except ValueError as exc:
            raise ConfigError(f"--target-server: {exc}") from None
    foldermap_xml = None
    if args.foldermap:
        load_folder_map(args.foldermap)  # refuse a bad map now, not in every worker
        foldermap_xml = args.foldermap.read_bytes()
    quotas = None
    if args.quotas:
        quota_result = read_quota_file(args.quotas)
        if quota_result.problems:
            for problem in quota_result.problems:
                err_console.print(f"{args.quotas}:{problem}", highlight=False, markup=False)
            raise ConfigError(f"{args.quotas}: bad rows; nothing was enqueued")
        quotas = dict(quota_result.quotas)
    options = RunOptions(
        source_kind=args.source_type,
        target=TargetSpec(
            server=target_server,
            # EWS: the admin acts for each identity (impersonation or delegate rights).
            method=AccessMethod.PROXYAUTH if target_ews else AccessMethod(args.target_method),
            admin=AdminLogin(args.target_admin or "", target_password or Secret("")),
            combined_template=args.target_combined_template,
            kind=args.target,
            ews=target_ews,
        ),
        source_ews=ews_source_settings(args, connect) if args.source_type == "ews" else None,
        connect=connect,
        since=args.since,
        until=args.until,
        foldermap_xml=foldermap_xml,
        quotas=quotas,
        max_connections_per_server=args.max_connections_per_server,
        forward_after_copy=args.forward_after_copy,
        sieve_port=args.sieve_port,
        late_commit_grace=args.late_commit_grace,
        connections_per_mailbox=args.connections_per_mailbox,
        source_local=_local_settings(args),
    )
    batch_id = args.batch_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    rewrite = _rewrite_maps(args, result.jobs)
    meta = {
        "csv": str(args.batch_csv),
        "method": args.method,
        "source_type": args.source_type,
        "target": f"{args.target} {target_server}",
        "insecure": "yes" if args.insecure else "no",
        "since": args.since.isoformat() if args.since else "",
        "until": args.until.isoformat() if args.until else "",
        "rewrite": rewrite_meta(rewrite),
        "forward_after_copy": "yes" if args.forward_after_copy else "no",
    }
    return batch_id, meta, build_jobs(result.jobs, options, box)


def _rewrite_maps(args: argparse.Namespace, jobs: Sequence[MailboxJob]) -> RewriteMaps | None:
    if not (args.rewrite or args.rewrite_x500 or args.rewrite_domain):
        return None
    domains = {}
    for text in args.rewrite_domain:
        try:
            old, new = parse_domain_pair(text)
        except ValueError as exc:
            raise ConfigError(f"--rewrite-domain {text!r}: {exc}") from None
        domains[old] = new
    return RewriteMaps(
        identities={
            j.source_identity: j.target_identity
            for j in jobs
            if j.source_identity.lower() != j.target_identity.lower()
        },
        x500=load_x500_map(args.rewrite_x500) if args.rewrite_x500 else {},
        domains=domains,
        keep_original=args.keep_original_headers,
    )


def _manifest_path(batch_id: str) -> Path:
    directory = state_dir() / "batches"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / f"{batch_id}.json"


def _save_manifest(batch_id: str, meta: dict[str, str], jobs: list[NewJob]) -> None:
    """A copy of the batch on this machine, so `resume` works even after Redis is lost."""
    path = _manifest_path(batch_id)
    data = {"batch_id": batch_id, "meta": meta, "jobs": [j.__dict__ for j in jobs]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


def _load_manifest(batch_id: str) -> tuple[dict[str, str], list[NewJob]] | None:
    path = _manifest_path(batch_id)
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data["meta"]), [NewJob(**j) for j in data["jobs"]]


def _secret_box(*, create: bool) -> SecretBox:
    """The key from MIGRATOR_SECRET_KEY, or (without a Redis URL) this machine's own."""
    if os.environ.get(SECRET_KEY_ENV):
        return SecretBox.from_env()
    if os.environ.get(REDIS_URL_ENV):
        raise ConfigError(
            f"{SECRET_KEY_ENV} is not set: workers and enqueuers must share one key "
            "(make one with `migrator keygen`)"
        )
    path = state_dir() / "secret.key"
    if not path.exists():
        if not create:
            raise ConfigError(f"no key at {path}: was this batch run on this machine?")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(new_key())
    return SecretBox(path.read_text().strip())


def cmd_enqueue(args: argparse.Namespace) -> int:
    url = _require_url()
    box = _secret_box(create=False)
    batch_id, meta, jobs = _prepare(args, box)
    store = StateStore.from_url(url)
    _create_batch(store, args, batch_id, meta, jobs)
    _send_tasks(url, batch_id, [j.job_id for j in jobs])
    print(batch_id)
    return 0


def _create_batch(
    store: StateStore,
    args: argparse.Namespace,
    batch_id: str,
    meta: dict[str, str],
    jobs: list[NewJob],
) -> None:
    """The batch in Redis and its copy on this machine; a named batch that exists already
    is refused (writing it again would reset the rows of a run that may still go on)."""
    if args.batch_id and store.batch_exists(batch_id):
        raise ConfigError(
            f"batch {batch_id} exists already: `migrator resume {batch_id}` goes on with it "
            "(or give another --batch-id)"
        )
    store.create_batch(batch_id, meta, jobs)
    _save_manifest(batch_id, meta, jobs)


def cmd_run(args: argparse.Namespace) -> int:
    url = shared_url()  # known to work before anything is written
    box = _secret_box(create=True)
    batch_id, meta, jobs = _prepare(args, box)
    job_ids = [j.job_id for j in jobs]
    interrupted = False
    forwarded = None
    with contextlib.ExitStack() as stack:
        if url:
            store = StateStore.from_url(url)
        else:  # one per state directory: joined if another command runs it already
            store = StateStore.from_url(stack.enter_context(PrivateRedis(state_dir())).url)
        _create_batch(store, args, batch_id, meta, jobs)
        err_console.print(f"batch {batch_id}: {len(jobs)} mailboxes", highlight=False)
        if args.insecure:
            err_console.print("[yellow]TLS certificates are NOT verified (--insecure)[/]")
        if url:
            _send_tasks(url, batch_id, job_ids)
            try:
                rows = watch(store, batch_id, err_console)
            except KeyboardInterrupt:
                err_console.print(
                    f"stopped watching; the workers go on (`migrator status {batch_id}`)",
                    highlight=False,
                )
                return EXIT_INTERRUPTED
        else:
            try:
                rows = _run_in_process(store, batch_id, job_ids, box, args.workers)
            except Interrupted as exc:
                rows, interrupted = exc.rows, True
        if not interrupted:
            forwarded = _forwarding_after_copy(store, args, jobs)
    console.print(result_table(rows, f"batch {batch_id}"))
    if forwarded is not None:
        from migrator.forwardcli import print_outcomes

        print_outcomes(forwarded, f"forwarding after copy: batch {batch_id}", as_json=False)
    if interrupted:
        err_console.print(Interrupted(batch_id, rows), highlight=False, markup=False)
        return EXIT_INTERRUPTED
    return 0 if all(r.state is MailboxState.DONE for r in rows) else 1


def _forwarding_after_copy(
    store: StateStore, args: argparse.Namespace, jobs: Sequence[NewJob]
) -> list[dict[str, str]] | None:
    if not args.forward_after_copy:
        return None
    from migrator.forwardcli import forwarding_rows

    return forwarding_rows(store, [json.loads(j.payload) for j in jobs])


def cmd_status(args: argparse.Namespace) -> int:
    url = shared_url()
    if url:
        return _print_status(StateStore.from_url(url), args)
    with PrivateRedis(state_dir()) as private:
        return _print_status(StateStore.from_url(private.url), args)


def _print_status(store: StateStore, args: argparse.Namespace) -> int:
    if not store.batch_exists(args.batch):
        raise ConfigError(f"batch {args.batch} is not known to this Redis")
    if args.json:
        print(status_json(store, args.batch))
        return 0
    meta = store.batch_meta(args.batch)
    title = f"batch {args.batch}"
    if meta.get("insecure") == "yes":
        title += " (TLS NOT verified: --insecure)"
    console.print(status_table(store, args.batch, title))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    url = shared_url()
    if url:
        store = StateStore.from_url(url)
        pending = _pending(store, args.batch)
        _send_tasks(url, args.batch, pending)
        err_console.print(f"batch {args.batch}: {len(pending)} mailboxes re-enqueued")
        if args.no_wait:
            return 0
        try:
            rows = watch(store, args.batch, err_console)
        except KeyboardInterrupt:
            err_console.print(
                f"stopped watching; the workers go on (`migrator status {args.batch}`)",
                highlight=False,
            )
            return EXIT_INTERRUPTED
    else:
        box = _secret_box(create=False)
        try:
            with PrivateRedis(state_dir()) as private:
                store = StateStore.from_url(private.url)
                pending = _pending(store, args.batch)
                rows = _run_in_process(store, args.batch, pending, box, args.workers)
        except Interrupted as exc:
            console.print(result_table(exc.rows, f"batch {args.batch}"))
            err_console.print(exc, highlight=False, markup=False)
            return EXIT_INTERRUPTED
    console.print(result_table(rows, f"batch {args.batch}"))
    return 0 if all(r.state is MailboxState.DONE for r in rows) else 1


def _pending(store: StateStore, batch_id: str) -> list[str]:
    """Mailboxes not done; the batch is restored from this machine's copy if Redis lost it.

    A mailbox that ended (failed, interrupted, ...) is queued again; one that is queued or
    running stays as it is: another command (a `run` still going) may be copying it, and
    the mailbox lock makes this one wait for it."""
    if not store.batch_exists(batch_id):
        saved = _load_manifest(batch_id)
        if saved is None:
            raise ConfigError(f"batch {batch_id} is neither in Redis nor saved on this machine")
        err_console.print(f"batch {batch_id} restored from {_manifest_path(batch_id)}")
        store.create_batch(batch_id, *saved)
    pending = []
    for row in store.mailboxes(batch_id):
        if row.state is MailboxState.DONE:
            continue
        if row.state.final:
            store.set_state(batch_id, row.job_id, MailboxState.QUEUED)
        pending.append(row.job_id)
    return pending


def _require_url() -> str:
    """MIGRATOR_REDIS_URL, known to work (checked and answering) before anything is written."""
    url = shared_url()
    if not url:
        raise ConfigError(f"{REDIS_URL_ENV} is not set: enqueue needs the workers' Redis")
    return url


def _send_tasks(url: str, batch_id: str, job_ids: Sequence[str]) -> None:
    from workers.app import app  # Celery only where a broker is used
    from workers.tasks import migrate_mailbox

    app.conf.update(broker_url=url, result_backend=url)
    for job_id in job_ids:
        migrate_mailbox.apply_async(args=[batch_id, job_id])


def _run_in_process(
    store: StateStore, batch_id: str, job_ids: Sequence[str], box: SecretBox, workers: int
) -> list[MailboxStatus]:
    """Copy these mailboxes with a pool of `workers` threads; their rows at the end.

    A first Ctrl-C starts no other mailbox (they stay queued) and stops the running
    ones once the batches in flight are checkpointed (they end interrupted), then
    raises Interrupted; a second one exits at once (130).  A mailbox another command
    holds is waited for."""
    stop = threading.Event()

    def one(job_id: str) -> None:
        while not stop.is_set():
            try:
                execute_job(store, batch_id, job_id, box, stop=stop)
                return
            except MailboxBusy:
                stop.wait(min(lock_ttl(), 5.0))

    with (
        _ctrl_c(stop, batch_id),
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mailbox") as pool,
    ):
        futures = [pool.submit(one, job_id) for job_id in job_ids]
        rows = watch(store, batch_id, err_console, finished=lambda: all(f.done() for f in futures))
        for future in futures:
            future.result()
    rows = store.mailboxes(batch_id) or rows
    if stop.is_set():
        raise Interrupted(batch_id, rows)
    return rows


@contextlib.contextmanager
def _ctrl_c(stop: threading.Event, batch_id: str) -> Iterator[None]:
    """SIGINT sets `stop`; a second one ends the process at once.  Python runs the handler
    in the main thread between two bytecodes, so it writes to fd 2 itself rather than
    through rich, whose lock the main thread may be holding."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; it handles them
        return

    def handler(_signum: int, _frame: object) -> None:
        if stop.is_set():
            os.write(2, f"\ninterrupted: `migrator resume {batch_id}` goes on from here\n".encode())
            # At once: the pool's threads (mid-append) are not waited for; the mailbox
            # lock expires, and the next pass recognises what reached the target.
            os._exit(EXIT_INTERRUPTED)
        stop.set()
        os.write(
            2,
            b"\nstopping: no mailbox starts, and those being copied stop once the batches "
            b"in flight are checkpointed (Ctrl-C again to quit at once)\n",
        )

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())

"""A batch as the commands prepare it: the CSV read and checked, the options turned
into job payloads (prepare.build_jobs), the copy kept on this machine for `resume`, and
the key secrets are sealed with.
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from migrator import connectors
from migrator.batch import AccessMethod, parse_server, read_batch_file
from migrator.cliargs import (
    ADMIN_PASSWORD_ENV,
    TARGET_ADMIN_PASSWORD_ENV,
    notify_settings,
    password_from,
)
from migrator.connectors.base import Role
from migrator.errors import ConfigError
from migrator.foldermap import load_folder_map
from migrator.localredis import REDIS_URL_ENV as REDIS_URL_ENV  # re-exported
from migrator.localredis import state_dir
from migrator.model import AdminLogin, BatchResult, ConnectOptions, MailboxJob, ServerAddress
from migrator.oauth.options import OAUTH2, PASSWORD, oauth_config
from migrator.prepare import RunOptions, TargetSpec, build_jobs
from migrator.quotas import read_quota_file
from migrator.rewrite import RewriteMaps, load_x500_map, parse_domain_pair
from migrator.secrets import (
    SECRET_KEY_ENV,
    Secret,
    SecretBox,
    new_key,
)
from migrator.state import NewJob
from migrator.terminal import err_console


def read_batch(args: argparse.Namespace) -> BatchResult:
    admin = None
    if args.admin:
        password = password_from(args.admin_password_file, ADMIN_PASSWORD_ENV, "admin")
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
        protocol=connectors.connector(args.source_type).protocol,
        target_logins=getattr(args, "target_method", None) == AccessMethod.INDIVIDUAL.value,
        token_logins=getattr(args, "source_auth", PASSWORD) == OAUTH2,
    )
    return connectors.connector(args.source_type).check_batch(result, args)


def print_problems(result: BatchResult, path: Path) -> None:
    for problem in result.problems:
        err_console.print(f"{path}:{problem}", highlight=False, markup=False)


def prepare(args: argparse.Namespace, box: SecretBox) -> tuple[str, dict[str, str], list[NewJob]]:
    """The batch id, its meta data and its jobs, from `run` or `enqueue` options."""
    result = read_batch(args)
    if result.problems:
        print_problems(result, args.batch_csv)
        raise ConfigError(
            f"{args.batch_csv}: {len(result.problems)} problems; nothing was enqueued "
            "(`migrator validate` lists them)"
        )
    connect = ConnectOptions(
        timeout=args.timeout,
        ca_file=args.ca_file,
        insecure=args.insecure,
        allow_plaintext=args.allow_plaintext,
    )
    target = _target_spec(args, connect)
    rewrite = _rewrite_maps(args, result.jobs)
    options = RunOptions(
        source_kind=args.source_type,
        target=target,
        source_settings=connectors.connector(args.source_type).settings(args, Role.SOURCE, connect),
        connect=connect,
        since=args.since,
        until=args.until,
        foldermap_xml=_folder_map_xml(args),
        quotas=_quotas(args),
        max_connections_per_server=args.max_connections_per_server,
        forward_after_copy=args.forward_after_copy,
        sieve_port=args.sieve_port,
        late_commit_grace=args.late_commit_grace,
        connections_per_mailbox=args.connections_per_mailbox,
        rewrite=rewrite,
        source_auth=oauth_config(args, "source"),
    )
    batch_id = args.batch_id or datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    meta = {
        "csv": str(args.batch_csv),
        "method": args.method,
        "source_type": args.source_type,
        "target": f"{args.target} {target.server}",
        "insecure": "yes" if args.insecure else "no",
        "since": args.since.isoformat() if args.since else "",
        "until": args.until.isoformat() if args.until else "",
        "rewrite": "yes" if rewrite else "no",
        "forward_after_copy": "yes" if args.forward_after_copy else "no",
        **notify_settings(args).to_meta(box, batch_id),
    }
    return batch_id, meta, build_jobs(result.jobs, options, box)


def _target_spec(args: argparse.Namespace, connect: ConnectOptions) -> TargetSpec:
    """Where the target mailboxes are and how to log in to them: the target admin (or
    service account) acting for each, or each row's own login (individual)."""
    target = connectors.connector(args.target)
    settings = target.settings(args, Role.TARGET, connect)
    method = AccessMethod(args.target_method)
    password = None
    auth = oauth_config(args, "target")
    if auth is not None:
        # Each TargetIdentity logs in as itself with a token: no admin, no password.
        method = AccessMethod.INDIVIDUAL
    elif method is not AccessMethod.INDIVIDUAL:
        password = password_from(
            args.target_admin_password_file, TARGET_ADMIN_PASSWORD_ENV, "target admin"
        )
        password_login = target.needs_password(settings)  # else a client secret only
        if password is None and password_login:
            raise ConfigError(
                "no target admin password: "
                f"use --target-admin-password-file or ${TARGET_ADMIN_PASSWORD_ENV}"
            )
        if password_login and not args.target_admin:
            raise ConfigError("--target-admin is required")
        if settings is not None:
            # With settings of its own (Exchange), the admin acts for each identity by
            # them (impersonation or delegate rights): the proxyauth shape.
            method = AccessMethod.PROXYAUTH
    return TargetSpec(
        server=target.target_server(settings) or _target_server(args),
        method=method,
        admin=AdminLogin(args.target_admin or "", password or Secret("")),
        combined_template=args.target_combined_template,
        kind=args.target,
        settings=settings,
        auth=auth,
    )


def _folder_map_xml(args: argparse.Namespace) -> bytes | None:
    if not args.foldermap:
        return None
    load_folder_map(args.foldermap)  # refuse a bad map now, not in every worker
    data: bytes = args.foldermap.read_bytes()
    return data


def _quotas(args: argparse.Namespace) -> dict[str, int] | None:
    if not args.quotas:
        return None
    quota_result = read_quota_file(args.quotas)
    if quota_result.problems:
        for problem in quota_result.problems:
            err_console.print(f"{args.quotas}:{problem}", highlight=False, markup=False)
        raise ConfigError(f"{args.quotas}: bad rows; nothing was enqueued")
    return dict(quota_result.quotas)


def _target_server(args: argparse.Namespace) -> ServerAddress:
    if not args.target_server:
        raise ConfigError("--target-server is required")
    try:
        return parse_server(args.target_server, protocol=connectors.connector(args.target).protocol)
    except ValueError as exc:
        raise ConfigError(f"--target-server: {exc}") from None


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


def manifest_path(batch_id: str) -> Path:
    directory = state_dir() / "batches"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / f"{batch_id}.json"


def save_manifest(batch_id: str, meta: dict[str, str], jobs: list[NewJob]) -> None:
    """A copy of the batch on this machine, so `resume` works even after Redis is lost."""
    path = manifest_path(batch_id)
    data = {"batch_id": batch_id, "meta": meta, "jobs": [j.__dict__ for j in jobs]}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


def load_manifest(batch_id: str) -> tuple[dict[str, str], list[NewJob]] | None:
    path = manifest_path(batch_id)
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return dict(data["meta"]), [NewJob(**j) for j in data["jobs"]]


def secret_box(*, create: bool) -> SecretBox:
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

"""A batch's mailboxes as job payloads: what `run` and `enqueue` hand the workers.

`build_jobs` turns each MailboxJob of the CSV, with the batch's options, into a
self-contained `jobs.Job` (both ends through their connectors, every secret sealed) and
the row Redis keeps for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from migrator import jobs, mailboxid
from migrator.batch import AccessMethod, combine_login
from migrator.connectors.base import Settings
from migrator.copier import CONNECTIONS_PER_MAILBOX, LATE_COMMIT_GRACE
from migrator.errors import ConfigError
from migrator.model import AdminLogin, ConnectOptions, Credentials, MailboxJob, ServerAddress
from migrator.oauth import OAuthConfig
from migrator.rewrite import RewriteMaps
from migrator.secrets import Secret, SecretBox
from migrator.sending import BATCH_BYTES, GROUPING_WINDOW, PREFETCH_BYTES
from migrator.state import NewJob


@dataclass(frozen=True)
class TargetSpec:
    """How to reach the target mailboxes: an admin acting for each TargetIdentity."""

    server: ServerAddress
    method: AccessMethod  # combined, proxyauth, or individual (each row's own login)
    admin: AdminLogin
    combined_template: str = "{admin}/{user}"
    kind: str = "imap"  # the target's connector
    settings: Settings | None = None  # the connector's own (Exchange: endpoint, auth)
    auth: OAuthConfig | None = None  # --target-auth oauth2: each identity with a token

    def credentials(self, identity: str, row: Credentials | None = None) -> Credentials:
        """The login for the target mailbox `identity`; `row` is the CSV row's own."""
        if self.auth is not None:
            return Credentials(identity, Secret(""))  # a bearer token at each login
        if self.method is AccessMethod.INDIVIDUAL:
            if row is None:
                raise ConfigError(f"no target login for {identity}: the row has none")
            return row
        if self.method is AccessMethod.PROXYAUTH:
            return Credentials(self.admin.login, self.admin.password, authzid=identity)
        if self.method is AccessMethod.COMBINED:
            login = combine_login(self.combined_template, admin=self.admin.login, user=identity)
            return Credentials(login, self.admin.password)
        raise ConfigError(
            f"target method {self.method.value} is not supported: "
            "use combined, proxyauth or individual"
        )


@dataclass(frozen=True)
class RunOptions:
    target: TargetSpec
    source_kind: str = "imap"  # the source's connector
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    since: datetime | None = None
    until: datetime | None = None
    foldermap_xml: bytes | None = None  # None: the shipped config/foldermap.xml
    quotas: Mapping[str, int] | None = None  # activation CSV, keyed by lower-cased identity
    max_connections_per_server: int = 8
    source_settings: Settings | None = None  # the source connector's own
    forward_after_copy: bool = False  # set forwarding to the target when a mailbox is done
    sieve_port: int = jobs.DEFAULT_SIEVE_PORT  # ManageSieve on the source host, for that
    late_commit_grace: float = LATE_COMMIT_GRACE  # see CopyOptions
    # At most this many connections to each side per mailbox, where the adapters allow
    # more than one and the source server's slots (max_connections_per_server) have room.
    connections_per_mailbox: int = CONNECTIONS_PER_MAILBOX
    rewrite: RewriteMaps | None = None  # address headers rewritten on the way
    batch_bytes: int = BATCH_BYTES  # the send loop's bounds: see CopyOptions
    prefetch_bytes: int = PREFETCH_BYTES
    grouping_window: int = GROUPING_WINDOW
    fetch_window: int = 0  # messages per fetch round trip at the source (0: the default)
    source_auth: OAuthConfig | None = None  # --source-auth oauth2: the rows' logins, tokens

    def job_options(self) -> jobs.Options:
        return jobs.Options(
            connect=self.connect,
            since=self.since,
            until=self.until,
            foldermap_xml=self.foldermap_xml.decode("utf-8") if self.foldermap_xml else None,
            max_connections_per_server=self.max_connections_per_server,
            forward_after_copy=self.forward_after_copy,
            sieve_port=self.sieve_port,
            late_commit_grace=self.late_commit_grace,
            connections_per_mailbox=self.connections_per_mailbox,
            batch_bytes=self.batch_bytes,
            prefetch_bytes=self.prefetch_bytes,
            grouping_window=self.grouping_window,
            fetch_window=self.fetch_window,
        )


def mailbox_key(job: MailboxJob, target: TargetSpec) -> str:
    """Stable id of a (source mailbox, target mailbox) pair, for checkpoints: the same
    mailboxes however the CSV spells their servers (mailboxid.py)."""
    return mailboxid.mailbox_key(job, target.server)


def legacy_mailbox_key(job: MailboxJob, target: TargetSpec) -> str:
    """Where versions before canonical mailbox names kept this pair's checkpoints."""
    text = "|".join(
        [
            str(job.source_server),
            job.source_identity.lower(),
            job.source_root_folder or "",
            str(target.server),
            job.target_identity.lower(),
        ]
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def build_jobs(
    mailboxes: Sequence[MailboxJob], options: RunOptions, box: SecretBox
) -> list[NewJob]:
    """Payloads for Redis: everything a worker needs, secrets sealed."""
    job_options = options.job_options()
    result = []
    for index, mailbox in enumerate(mailboxes, start=1):
        job = jobs.Job(
            line=mailbox.line,
            source=source_end(
                mailbox,
                options.source_kind,
                options.source_settings,
                box,
                job_options,
                auth=options.source_auth,
            ),
            target_identity=mailbox.target_identity,
            options=job_options,
            target=jobs.seal_end(
                "target",
                options.target.kind,
                mailbox.target_identity,
                options.target.server,
                options.target.credentials(mailbox.target_identity, mailbox.target_credentials),
                box,
                settings=options.target.settings,
                auth=options.target.auth,
                options=job_options,
            ),
            mailbox_key=mailbox_key(mailbox, options.target),
            legacy_mailbox_key=legacy_mailbox_key(mailbox, options.target),
            activation_quota=(options.quotas or {}).get(mailbox.target_identity.lower()),
            rewrite=options.rewrite,
        )
        result.append(
            NewJob(
                job_id=f"{index:05d}",
                line=mailbox.line,
                source_identity=mailbox.source_identity,
                target_identity=mailbox.target_identity,
                mailbox_key=job.mailbox_key,
                payload=job.to_json(),
            )
        )
    return result


def source_end(
    mailbox: MailboxJob,
    kind: str,
    settings: Settings | None,
    box: SecretBox,
    options: jobs.Options,
    *,
    auth: OAuthConfig | None = None,
) -> jobs.End:
    """The source end of a job (a migration's or a forwarding's), its secrets sealed."""
    credentials = mailbox.source_credentials
    if not isinstance(credentials, Credentials):
        raise ConfigError("a batch's logins are sealed as read from the CSV, not as tokens")
    return jobs.seal_end(
        "source",
        kind,
        mailbox.source_identity,
        mailbox.source_server,
        credentials,
        box,
        root_folder=mailbox.source_root_folder,
        settings=settings,
        auth=auth,
        options=options,
    )

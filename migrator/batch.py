"""CSV access-method formats -> MailboxJob values (pure: text in, values out).

A batch CSV has one source mailbox per row:

    SourceIdentity,SourceServer,SourceLoginID,SourcePassword,TargetIdentity,SourceRootFolder

`parse_batch` turns the rows into `MailboxJob`s and every row it cannot use into one or
more `BadBatchRow(line, column, problem)`, so one bad row never stops a batch of
thousands.  Only a file that cannot be read at all (not UTF-8, not CSV, no header, a
missing column, a missing admin login) raises `BatchError`.  migrator.quotas does the
same for the activation CSV (Identity, MailboxQuotaSize in bytes).

Problem messages name the line and column but never quote a cell: a row with a comma
too many or too few shifts the password under another column.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from migrator import connectors
from migrator.csvtable import CONTROL, FORMULA_START, Row, open_table, read_text
from migrator.errors import BadBatchRow, BatchError, ConfigError
from migrator.model import AdminLogin, BatchResult, Credentials, MailboxJob, ServerAddress
from migrator.names import email_address_problem, hostname_problem
from migrator.secrets import Secret


# str + Enum, not StrEnum: the style guide's `class X(str, Enum)`, and other modules may
# rely on its str() and format() behaviour.
class AccessMethod(str, enum.Enum):  # noqa: UP042
    COMBINED = "combined"  # <admin><sep><SourceLoginID> with the admin password given to the tool
    ROOTFOLDER = "rootfolder"  # log in as the admin, read only the folders under SourceRootFolder
    INDIVIDUAL = "individual"  # SourceLoginID + SourcePassword from the row
    MANUAL = "manual"  # SourceLoginID such as user01*admin + SourcePassword from the row, as is
    PROXYAUTH = "proxyauth"  # SASL PLAIN: admin authenticates, authorization identity = user


@dataclass(frozen=True)
class BatchRow:
    line: int  # 1-based physical line where the row starts
    source_identity: str
    source_server: ServerAddress
    source_login_id: str
    source_password: Secret | None
    target_identity: str
    source_root_folder: str | None


SOURCE_IDENTITY = "SourceIdentity"
SOURCE_SERVER = "SourceServer"
SOURCE_LOGIN_ID = "SourceLoginID"
SOURCE_PASSWORD = "SourcePassword"
TARGET_IDENTITY = "TargetIdentity"
SOURCE_ROOT_FOLDER = "SourceRootFolder"
TARGET_LOGIN_ID = "TargetLoginID"
TARGET_PASSWORD = "TargetPassword"
BATCH_COLUMNS = (
    SOURCE_IDENTITY,
    SOURCE_SERVER,
    SOURCE_LOGIN_ID,
    SOURCE_PASSWORD,
    TARGET_IDENTITY,
    SOURCE_ROOT_FOLDER,
    TARGET_LOGIN_ID,
    TARGET_PASSWORD,
)
TARGET_LOGIN_COLUMNS = (TARGET_LOGIN_ID, TARGET_PASSWORD)
BATCH_REQUIRED = (SOURCE_IDENTITY, SOURCE_SERVER, SOURCE_LOGIN_ID)
# Columns a method cannot work without: their absence from the header is a file problem.
METHOD_COLUMNS: Mapping[AccessMethod, tuple[str, ...]] = {
    AccessMethod.INDIVIDUAL: (SOURCE_PASSWORD,),
    AccessMethod.MANUAL: (SOURCE_PASSWORD,),
    AccessMethod.ROOTFOLDER: (SOURCE_ROOT_FOLDER,),
}
_ADMIN_METHODS = frozenset({AccessMethod.COMBINED, AccessMethod.ROOTFOLDER, AccessMethod.PROXYAUTH})
_SPACE = re.compile(r"\s")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def parse_server(text: str, *, protocol: str = "imap") -> ServerAddress:
    """Parse `host`, `host:port`, `[v6]:port` or `scheme://host[:port]` for `protocol`.

    The schemes are the protocol's connector's (migrator.connectors): for IMAP a bare
    host means STARTTLS on 143 and imaps:// implicit TLS on 993.  Raises ValueError with
    a message fit for a person who typed the cell.
    """
    try:
        connector = connectors.by_protocol(protocol)
    except ConfigError as exc:
        raise ValueError(str(exc)) from None
    address = connector.parse_address(text)  # a path, for a source of files
    if address is not None:
        return address
    schemes = connector.schemes
    if not text:
        raise ValueError("the server address is empty")
    if _SPACE.search(text) or CONTROL.search(text):
        raise ValueError("the server address contains a space or control character")
    scheme, separator, rest = text.partition("://")
    if separator:
        scheme = scheme.lower()
        if scheme not in schemes:
            # Named after their protocol (imaps, pop3s, ews): http(s) stays "unknown" to IMAP.
            owner = next(
                (
                    e
                    for e in connectors.REGISTRY
                    if scheme.startswith(e.protocol) and scheme in connectors.schemes(e.protocol)
                ),
                None,
            )
            if owner is not None:
                raise ValueError(
                    f"{scheme}:// is a {owner.protocol.upper()} address, but this batch reads "
                    f"{protocol.upper()} (a {owner.protocol.upper()} source: "
                    f"--source-type {owner.kind})"
                )
            expected = " or ".join(f"{name}://" for name in schemes)
            raise ValueError(f"unknown scheme {scheme[:20]!r}; use {expected} or a bare host")
    else:
        scheme, rest = protocol, text
    tls, default_port = schemes[scheme]
    rest = rest.removesuffix("/")
    if "@" in rest:
        # Never echo the cell: whatever is before the @ may be a password.
        raise ValueError(
            "the server address must not hold a user name or password; "
            "use the SourceLoginID and SourcePassword columns"
        )
    if any(ch in rest for ch in "/?#"):
        raise ValueError("the server address has a path; give only host or host:port")
    host, port = _split_host_port(rest, default_port)
    return ServerAddress(host=host, port=port, tls=tls, protocol=protocol)


# A batch names a few servers many times over; errors (ValueError) are not cached.
_parse_server_cached = functools.lru_cache(maxsize=1024)(parse_server)


def _split_host_port(text: str, default_port: int) -> tuple[str, int]:
    port_text: str | None
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket:
            raise ValueError("an IPv6 address opened with [ has no closing ]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("the address in [ ] is not an IPv6 address") from None
        if after and not after.startswith(":"):
            raise ValueError("expected :port after the ] of an IPv6 address")
        port_text = after[1:] if after else None
    elif text.count(":") > 1:
        raise ValueError("put an IPv6 address in brackets, as in [2001:db8::1]:993")
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
        problem = hostname_problem(host)
        if problem is not None:
            raise ValueError(problem)
    return host, _port(port_text, default_port)


def _port(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()):
        raise ValueError("the port is not a number")
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port {port} is not between 1 and 65535")
    return port


@functools.lru_cache(maxsize=4096)
def resolve_credentials(
    row: BatchRow, method: AccessMethod, admin: AdminLogin | None, combined_template: str
) -> Credentials:
    """The credentials `method` logs in with for `row`.

    Raises BadBatchRow if the row lacks what the method needs (SourcePassword for
    individual and manual, SourceRootFolder for rootfolder), and BatchError if the
    method needs an admin login and `admin` is None or the template is unusable.
    """
    method = AccessMethod(method)
    if method in (AccessMethod.INDIVIDUAL, AccessMethod.MANUAL):
        if not row.source_password:
            raise BadBatchRow(row.line, SOURCE_PASSWORD, _needed_by(method))
        # manual: SourceLoginID (such as user01*admin) is sent exactly as written.
        return Credentials(login=row.source_login_id, password=row.source_password)
    admin = _require_admin(method, admin)
    if method is AccessMethod.COMBINED:
        login = combine_login(combined_template, admin=admin.login, user=row.source_login_id)
        return Credentials(login=login, password=admin.password)
    if method is AccessMethod.ROOTFOLDER:
        if not row.source_root_folder:
            raise BadBatchRow(row.line, SOURCE_ROOT_FOLDER, _needed_by(method))
        return Credentials(login=row.source_login_id, password=admin.password)
    # proxyauth, RFC 4616 SASL PLAIN: authenticate as the admin, act as the user.
    return Credentials(login=admin.login, password=admin.password, authzid=row.source_login_id)


def _require_admin(method: AccessMethod, admin: AdminLogin | None) -> AdminLogin:
    if admin is None or not admin.login or not admin.password:
        raise BatchError(
            f"the {method.value} access method logs in with the admin account: give the "
            "admin login and password (--admin and --admin-password-file, or "
            "$MIGRATOR_ADMIN_PASSWORD)"
        )
    return admin


def _check_template(template: str) -> None:
    names = _PLACEHOLDER.findall(template)
    if sorted(names) != ["admin", "user"] or template.count("{") != 2:
        raise BatchError(
            f"the combined login template {template!r} must hold {{admin}} and {{user}} "
            "once each, as in '{admin}/{user}' or '{user}*{admin}'"
        )


def combine_login(template: str, *, admin: str, user: str) -> str:
    _check_template(template)
    # Not str.format: a template must not reach attributes ({admin.__class__}), and a
    # brace inside a login must stay a brace.
    return _PLACEHOLDER.sub(lambda m: admin if m.group(1) == "admin" else user, template)


def _needed_by(method: AccessMethod) -> str:
    if method is AccessMethod.ROOTFOLDER:
        return "is empty; the rootfolder method migrates only the folders under it"
    return f"is empty; the {method.value} method logs in with the password from the row"


def parse_batch(
    text: str,
    method: AccessMethod,
    *,
    admin: AdminLogin | None = None,
    combined_template: str = "{admin}/{user}",
    protocol: str = "imap",
    target_logins: bool = False,
    token_logins: bool = False,
) -> BatchResult:
    """Parse a batch CSV into jobs for `method`, and problems for the rows it cannot use.

    With `token_logins` (--source-auth oauth2), each row's SourceLoginID logs in with a
    bearer token: the individual method without SourcePassword.

    With `target_logins`, each row also names the login for its target mailbox
    (TargetLoginID and TargetPassword, as imapsync's --user2/--password2): for targets
    where the operator has no admin or master login.

    Never raises for a bad row.  Raises BatchError if the file has no header, lacks a
    column (the three required ones, or one `method` cannot work without), is not
    CSV, or if `method` needs an admin login and `admin` is None.
    """
    method = AccessMethod(method)
    if token_logins and method is not AccessMethod.INDIVIDUAL:
        raise BatchError(
            "an OAuth 2.0 source logs in as each row's SourceLoginID: use --method individual"
        )
    if method in _ADMIN_METHODS:
        _require_admin(method, admin)
    if method is AccessMethod.COMBINED:
        _check_template(combined_template)
    # Files need no login; a Graph source is read with its app's own token.
    needs_login = connectors.by_protocol(protocol).needs_login
    if not needs_login and method is not AccessMethod.INDIVIDUAL:
        raise BatchError(f"a {protocol} source has no login of its own: use --method individual")
    if token_logins and not needs_login:
        raise BatchError(
            f"a {protocol} source has no login of its own: it takes no --source-auth oauth2"
        )
    required = BATCH_REQUIRED if needs_login else (SOURCE_IDENTITY, SOURCE_SERVER)
    columns, width, rows = open_table(text, BATCH_COLUMNS, required)
    needed = METHOD_COLUMNS.get(method, ()) if needs_login and not token_logins else ()
    needed += TARGET_LOGIN_COLUMNS if target_logins else ()
    for name in needed:
        if name not in columns:
            why = method.value if name not in TARGET_LOGIN_COLUMNS else "--target-method individual"
            raise BatchError(f"the header has no column {name}, which {why} needs")
    reader = _RowReader(
        method, admin, combined_template, protocol, needed, target_logins, needs_login, token_logins
    )
    jobs: list[MailboxJob] = []
    problems: list[BadBatchRow] = []
    for line, cells in rows:
        row = Row(line, cells, columns, width)
        job = reader.job(row)
        if job is None:
            problems.extend(row.problems.values())
        else:
            jobs.append(job)
    return BatchResult(jobs=tuple(jobs), problems=tuple(problems))


@dataclass
class _RowReader:
    """Turns one row into a job, or leaves its problems on the row."""

    method: AccessMethod
    admin: AdminLogin | None
    combined_template: str
    protocol: str
    needed: tuple[str, ...]
    target_logins: bool
    needs_login: bool
    token_logins: bool = False
    first_source: dict[str, int] = field(default_factory=dict)  # identity -> line
    first_target: dict[str, int] = field(default_factory=dict)

    def job(self, row: Row) -> MailboxJob | None:
        if row.shifted:
            return None
        for name in (SOURCE_IDENTITY, SOURCE_SERVER, SOURCE_LOGIN_ID, TARGET_IDENTITY):
            if row.get(name).startswith(FORMULA_START):
                row.report(name, f"starts with {row.get(name)[0]!r}, which spreadsheets run")
        source_identity, target_identity = self._identities(row)
        server = self._server(row)
        login = row.required(SOURCE_LOGIN_ID) if self.needs_login else row.get(SOURCE_LOGIN_ID)
        for name in self.needed:
            row.required(name, self._why(name))
        if row.problems or server is None:
            return None
        password = row.get(SOURCE_PASSWORD)
        batch_row = BatchRow(
            line=row.line,
            source_identity=source_identity,
            source_server=server,
            source_login_id=login,
            source_password=Secret(password) if password else None,
            target_identity=target_identity,
            source_root_folder=row.get(SOURCE_ROOT_FOLDER) or None,
        )
        try:
            credentials = (
                resolve_credentials(batch_row, self.method, self.admin, self.combined_template)
                if self.needs_login and not self.token_logins
                else Credentials(login, Secret(""))  # files; or a token at each login
            )
        except BadBatchRow as exc:
            row.problems[exc.column] = exc
            return None
        return MailboxJob(
            line=row.line,
            source_identity=source_identity,
            source_server=server,
            source_credentials=credentials,
            source_root_folder=batch_row.source_root_folder,
            target_identity=target_identity,
            target_credentials=self._target_login(row),
        )

    def _why(self, column: str) -> str:
        if column in TARGET_LOGIN_COLUMNS:
            return "is empty; --target-method individual needs it"
        return _needed_by(self.method)

    def _identities(self, row: Row) -> tuple[str, str]:
        source_identity = row.required(SOURCE_IDENTITY)
        target_cell = row.get(TARGET_IDENTITY)
        target_identity = target_cell or source_identity  # default: same address
        for name, address in ((SOURCE_IDENTITY, source_identity), (TARGET_IDENTITY, target_cell)):
            if address and row.ok(name):
                row.report(name, email_address_problem(address))
        source_repeated = row.first_seen(self.first_source, SOURCE_IDENTITY, source_identity)
        if target_cell or not source_repeated:
            row.first_seen(self.first_target, TARGET_IDENTITY, target_identity)
        return source_identity, target_identity

    def _server(self, row: Row) -> ServerAddress | None:
        server_text = row.required(SOURCE_SERVER)
        if not (server_text and row.ok(SOURCE_SERVER)):
            return None
        try:
            return _parse_server_cached(server_text, protocol=self.protocol)
        except ValueError as exc:
            row.report(SOURCE_SERVER, str(exc))
            return None

    def _target_login(self, row: Row) -> Credentials | None:
        if not self.target_logins:
            return None
        return Credentials(row.get(TARGET_LOGIN_ID), Secret(row.get(TARGET_PASSWORD)))


def read_batch_file(
    path: str | Path,
    method: AccessMethod,
    *,
    admin: AdminLogin | None = None,
    combined_template: str = "{admin}/{user}",
    protocol: str = "imap",
    target_logins: bool = False,
    token_logins: bool = False,
) -> BatchResult:
    """Read, decode and parse a batch CSV file; file-level BatchErrors name the path."""
    text = read_text(path)
    try:
        return parse_batch(
            text,
            method,
            admin=admin,
            combined_template=combined_template,
            protocol=protocol,
            target_logins=target_logins,
            token_logins=token_logins,
        )
    except BatchError as exc:
        raise BatchError(f"{path}: {exc}") from exc

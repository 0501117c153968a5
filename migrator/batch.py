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
from dataclasses import dataclass
from pathlib import Path

from migrator.connectors.local.paths import LOCAL_KINDS, relative_path
from migrator.csvtable import CONTROL, FORMULA_START, Row, open_table, read_text
from migrator.errors import BadBatchRow, BatchError
from migrator.secrets import Secret


# str + Enum, not StrEnum: the style guide's `class X(str, Enum)`, and other modules may
# rely on its str() and format() behaviour.
class AccessMethod(str, enum.Enum):  # noqa: UP042
    COMBINED = "combined"  # <admin><sep><SourceLoginID> with the admin password given to the tool
    ROOTFOLDER = "rootfolder"  # log in as the admin, read only the folders under SourceRootFolder
    INDIVIDUAL = "individual"  # SourceLoginID + SourcePassword from the row
    MANUAL = "manual"  # SourceLoginID such as user01*admin + SourcePassword from the row, as is
    PROXYAUTH = "proxyauth"  # SASL PLAIN: admin authenticates, authorization identity = user


class TlsMode(str, enum.Enum):  # noqa: UP042
    IMPLICIT = "implicit"  # imaps://, pop3s://: TLS from the first byte
    STARTTLS = "starttls"  # plain connect, then STARTTLS (required unless plaintext is allowed)


@dataclass(frozen=True)
class ServerAddress:
    host: str  # an IPv6 address is kept without its brackets
    port: int
    tls: TlsMode
    protocol: str = "imap"  # "imap", "pop3", "ews"; "maildir" or "mbox": host is a path

    def __str__(self) -> str:
        if self.protocol in LOCAL_KINDS:  # local source (connectors/local): port, tls unused
            return f"file://{self.host}"
        scheme = self.protocol + ("s" if self.tls is TlsMode.IMPLICIT else "")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Credentials:
    """What to send to log in: LOGIN login password, or AUTHENTICATE PLAIN with authzid."""

    login: str
    password: Secret
    authzid: str | None = None  # SASL PLAIN authorization identity (proxyauth)


@dataclass(frozen=True)
class AdminLogin:
    """The admin account given to the tool (combined, rootfolder, proxyauth)."""

    login: str
    password: Secret


@dataclass(frozen=True)
class BatchRow:
    line: int  # 1-based physical line where the row starts
    source_identity: str
    source_server: ServerAddress
    source_login_id: str
    source_password: Secret | None
    target_identity: str
    source_root_folder: str | None


@dataclass(frozen=True)
class MailboxJob:
    """One mailbox to migrate: where to read, how to log in, where it goes."""

    line: int
    source_identity: str
    source_server: ServerAddress
    source_credentials: Credentials
    source_root_folder: str | None
    target_identity: str


@dataclass(frozen=True)
class BatchResult:
    jobs: tuple[MailboxJob, ...]
    problems: tuple[BadBatchRow, ...]  # in file order


SOURCE_IDENTITY = "SourceIdentity"
SOURCE_SERVER = "SourceServer"
SOURCE_LOGIN_ID = "SourceLoginID"
SOURCE_PASSWORD = "SourcePassword"
TARGET_IDENTITY = "TargetIdentity"
SOURCE_ROOT_FOLDER = "SourceRootFolder"
BATCH_COLUMNS = (
    SOURCE_IDENTITY,
    SOURCE_SERVER,
    SOURCE_LOGIN_ID,
    SOURCE_PASSWORD,
    TARGET_IDENTITY,
    SOURCE_ROOT_FOLDER,
)
BATCH_REQUIRED = (SOURCE_IDENTITY, SOURCE_SERVER, SOURCE_LOGIN_ID)
# Columns a method cannot work without: their absence from the header is a file problem.
METHOD_COLUMNS: Mapping[AccessMethod, tuple[str, ...]] = {
    AccessMethod.INDIVIDUAL: (SOURCE_PASSWORD,),
    AccessMethod.MANUAL: (SOURCE_PASSWORD,),
    AccessMethod.ROOTFOLDER: (SOURCE_ROOT_FOLDER,),
}
_ADMIN_METHODS = frozenset({AccessMethod.COMBINED, AccessMethod.ROOTFOLDER, AccessMethod.PROXYAUTH})
_SCHEMES: Mapping[str, Mapping[str, tuple[TlsMode, int]]] = {
    "imap": {"imap": (TlsMode.STARTTLS, 143), "imaps": (TlsMode.IMPLICIT, 993)},
    "pop3": {"pop3": (TlsMode.STARTTLS, 110), "pop3s": (TlsMode.IMPLICIT, 995)},  # RFC 2595 STLS
    # EWS (an Exchange source): a bare host or https:// is /EWS/Exchange.asmx over TLS;
    # http:// (tests) has no TLS at all, and the EWS adapter refuses it without
    # --allow-plaintext.  STARTTLS stands for that here: EWS has no upgrade.
    "ews": {
        "ews": (TlsMode.IMPLICIT, 443),
        "https": (TlsMode.IMPLICIT, 443),
        "http": (TlsMode.STARTTLS, 80),
    },
}
_SPACE = re.compile(r"\s")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LOCAL_SPECIALS = re.compile(r'[\s"(),:;<>\[\\\]]')  # RFC 5322 specials, unquoted local part
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def parse_server(text: str, *, protocol: str = "imap") -> ServerAddress:
    """Parse `host`, `host:port`, `[v6]:port` or `scheme://host[:port]` for `protocol`.

    A bare host means the plain scheme with STARTTLS (imap: 143, pop3: 110); imaps://
    and pop3s:// mean implicit TLS (993, 995).  Raises ValueError with a message fit
    for a person who typed the cell.
    """
    if protocol in LOCAL_KINDS:  # local source (connectors/local): a path below --source-root
        return ServerAddress(relative_path(text), 0, TlsMode.IMPLICIT, protocol=protocol)
    schemes = _SCHEMES.get(protocol)
    if schemes is None:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(_SCHEMES)}")
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
                (n for n, known in _SCHEMES.items() if scheme in known and scheme.startswith(n)),
                None,
            )
            if owner is not None:
                raise ValueError(
                    f"{scheme}:// is a {owner.upper()} address, but this batch reads "
                    f"{protocol.upper()}"
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
        problem = _hostname_problem(host)
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
def _hostname_problem(host: str) -> str | None:
    if not host:
        return "the server address has no host name"
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "the host is not an IPv4 address"
        return None
    return _domain_problem(host)


@functools.lru_cache(maxsize=4096)
def _domain_problem(domain: str, what: str = "host") -> str | None:
    if domain.isascii():
        ascii_domain = domain
    else:
        try:  # IDN (RFC 5890): the A-label form must exist
            ascii_domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            return f"the {what} is not a valid international domain name"
    if len(ascii_domain) > 253 or not all(_LABEL.fullmatch(x) for x in ascii_domain.split(".")):
        return f"the {what} is not a domain name (letters, digits, hyphens between dots)"
    return None


def email_address_problem(address: str) -> str | None:
    """Why `address` is not a usable mailbox address, or None if it is.

    Accepts local@domain with one @, a dot-atom local part (non-ASCII allowed, RFC 6531)
    and a domain of letter/digit/hyphen labels with at least one dot (IDN allowed).
    """
    if address.count("@") != 1:
        return "not an email address (local@domain)"
    local, domain = address.split("@")
    if not local:
        return "not an email address: nothing before the @"
    if _LOCAL_SPECIALS.search(local) or CONTROL.search(local):
        return 'the part before the @ has a space or one of "(),:;<>[\\]'
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return "the part before the @ starts or ends with a dot, or has '..'"
    if len(local.encode("utf-8")) > 64:
        return "the part before the @ is longer than 64 bytes"
    if "." not in domain:
        return "the domain has no dot"
    return _domain_problem(domain, what="domain")


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
            f"the {method.value} access method logs in with the admin account: "
            "give the admin login and password"
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
) -> BatchResult:
    """Parse a batch CSV into jobs for `method`, and problems for the rows it cannot use.

    Never raises for a bad row.  Raises BatchError if the file has no header, lacks a
    column (the three required ones, or one `method` cannot work without), is not
    CSV, or if `method` needs an admin login and `admin` is None.
    """
    method = AccessMethod(method)
    local = protocol in LOCAL_KINDS  # local source (connectors/local): no login, no password
    if local and method is not AccessMethod.INDIVIDUAL:
        raise BatchError(f"a {protocol} source is files, with no login: use --method individual")
    if method in _ADMIN_METHODS:
        _require_admin(method, admin)
    if method is AccessMethod.COMBINED:
        _check_template(combined_template)
    if protocol not in _SCHEMES and not local:
        raise ValueError(f"unknown protocol {protocol!r}")
    required = (SOURCE_IDENTITY, SOURCE_SERVER) if local else BATCH_REQUIRED
    columns, width, rows = open_table(text, BATCH_COLUMNS, required)
    needed = () if local else METHOD_COLUMNS.get(method, ())
    for name in needed:
        if name not in columns:
            raise BatchError(f"the header has no column {name}, which {method.value} needs")
    needed_why = _needed_by(method)
    jobs: list[MailboxJob] = []
    problems: list[BadBatchRow] = []
    first_source: dict[str, int] = {}  # lower-cased identity -> line; dicts keep it linear
    first_target: dict[str, int] = {}
    for line, cells in rows:
        row = Row(line, cells, columns, width)
        if row.shifted:
            problems.extend(row.problems.values())
            continue
        for name in (SOURCE_IDENTITY, SOURCE_SERVER, SOURCE_LOGIN_ID, TARGET_IDENTITY):
            if row.get(name).startswith(FORMULA_START):
                row.report(name, f"starts with {row.get(name)[0]!r}, which spreadsheets run")

        source_identity = row.required(SOURCE_IDENTITY)
        target_cell = row.get(TARGET_IDENTITY)
        target_identity = target_cell or source_identity  # default: same address
        for name, address in ((SOURCE_IDENTITY, source_identity), (TARGET_IDENTITY, target_cell)):
            if address and row.ok(name):
                row.report(name, email_address_problem(address))
        source_repeated = row.first_seen(first_source, SOURCE_IDENTITY, source_identity)
        if target_cell or not source_repeated:
            row.first_seen(first_target, TARGET_IDENTITY, target_identity)

        server: ServerAddress | None = None
        server_text = row.required(SOURCE_SERVER)
        if server_text and row.ok(SOURCE_SERVER):
            try:
                server = _parse_server_cached(server_text, protocol=protocol)
            except ValueError as exc:
                row.report(SOURCE_SERVER, str(exc))
        login = row.get(SOURCE_LOGIN_ID) if local else row.required(SOURCE_LOGIN_ID)
        password = row.get(SOURCE_PASSWORD)
        for name in needed:
            row.required(name, needed_why)

        if row.problems or server is None:
            problems.extend(row.problems.values())
            continue
        batch_row = BatchRow(
            line=line,
            source_identity=source_identity,
            source_server=server,
            source_login_id=login,
            source_password=Secret(password) if password else None,
            target_identity=target_identity,
            source_root_folder=row.get(SOURCE_ROOT_FOLDER) or None,
        )
        try:
            credentials = (
                Credentials(login=login, password=Secret(""))
                if local
                else resolve_credentials(batch_row, method, admin, combined_template)
            )
        except BadBatchRow as exc:
            problems.append(exc)
            continue
        jobs.append(
            MailboxJob(
                line=line,
                source_identity=source_identity,
                source_server=server,
                source_credentials=credentials,
                source_root_folder=batch_row.source_root_folder,
                target_identity=target_identity,
            )
        )
    return BatchResult(jobs=tuple(jobs), problems=tuple(problems))


def read_batch_file(
    path: str | Path,
    method: AccessMethod,
    *,
    admin: AdminLogin | None = None,
    combined_template: str = "{admin}/{user}",
    protocol: str = "imap",
) -> BatchResult:
    """Read, decode and parse a batch CSV file; file-level BatchErrors name the path."""
    text = read_text(path)
    try:
        return parse_batch(
            text, method, admin=admin, combined_template=combined_template, protocol=protocol
        )
    except BatchError as exc:
        raise BatchError(f"{path}: {exc}") from exc

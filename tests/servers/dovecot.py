"""A private Dovecot 2.3 on free loopback ports, everything under one temporary directory.

It serves IMAP (STARTTLS), IMAPS, POP3, POP3S, ManageSieve and, when dovecot-lmtpd is installed,
LMTP on a unix socket, for users kept in per-user passwd-files, with per-user quotas, SPECIAL-USE
folders and master users ("user*admin"). Facts the tests rely on are checked in
tests/test_servers.py; the configuration itself is in dovecot_config.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .certs import TlsFiles, make_tls_files
from .dovecot_config import (
    LMTP_AVAILABLE,
    SPECIAL_USE_FOLDERS,
    DovecotConfig,
    identity,
    render_config,
)
from .ports import LOOPBACK, free_ports, wait_for_port
from .process import ServerProcess

DOVECOT = "/usr/sbin/dovecot"
DOVEADM = "/usr/bin/doveadm"
# Local delivery with Sieve: [DOVECOT_LDA, "-c", server.config_path, "-d", user], message on stdin.
DOVECOT_LDA = "/usr/lib/dovecot/dovecot-lda"

# The master user every instance has unless told otherwise; "user*admin" logs in as "user".
MASTER_USER = "admin"
MASTER_PASSWORD = "admin-secret-Pw1"
# A second master user, whose password is not ASCII: IMAP, POP3 and ManageSieve logins must
# carry it as UTF-8 (passwd-file compares the bytes).
NON_ASCII_MASTER_USER = "admin-intl"
NON_ASCII_MASTER_PASSWORD = "Ädmin-Pässwörd-ü-€-日本"

# What fixtures give users who need no particular password.
DEFAULT_USER_PASSWORD = "user-secret-Pw1"

# Dovecot's answer to an APPEND past the quota: "NO [OVERQUOTA] Quota exceeded (mailbox for user
# is full)". RFC 5530 defines the response code; the text is Dovecot's quota_exceeded_message.
OVERQUOTA_TEXT = "Quota exceeded (mailbox for user is full)"


class MakeUser(Protocol):
    """The ``make_user`` fixture: creates a uniquely named user and returns the login name."""

    def __call__(
        self,
        password: str = DEFAULT_USER_PASSWORD,
        *,
        quota_bytes: int | None = None,
        prefix: str = "user",
        server: DovecotServer | None = None,
    ) -> str: ...


@dataclass(frozen=True)
class UserSpec:
    password: str
    # None: no limit. IMAP QUOTA counts storage in units of 1024 octets (RFC 2087); Dovecot
    # rounds up, so GETQUOTAROOT shows ceil(quota_bytes / 1024) as the STORAGE limit.
    quota_bytes: int | None = None


def _is_alive(pid: int) -> bool:
    """Whether *pid* runs: exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (comm) S ...": the state follows the last ")", as comm may contain spaces.
    return stat[stat.rindex(")") + 2] != "Z"


def _passwd_line(name: str, password: str, home: Path | None = None, extra: str = "") -> str:
    for value in (name, password):
        if ":" in value or "\n" in value:
            raise ValueError(f"passwd-file fields cannot contain ':' or newlines: {value!r}")
    # user:password:uid:gid:gecos:home:shell:extra_fields; empty uid/gid mean mail_uid/mail_gid.
    return f"{name}:{{PLAIN}}{password}::::{'' if home is None else home}::{extra}\n"


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")  # Dovecot reads passwords as bytes: UTF-8 ones
    tmp.chmod(0o644)  # the auth process reads it as default_internal_user
    tmp.replace(path)


class DovecotServer(ServerProcess):
    """Dovecot with a generated configuration, listening on 127.0.0.1 only.

    ``start()`` returns once IMAP answers; ``stop()`` ends the master and all its children.
    Users live in passwd-files that Dovecot reads at login, so ``add_user()`` works while the
    server runs.
    """

    host = LOOPBACK

    log_files = ("dovecot.stdout", "dovecot.log")

    def __init__(
        self,
        *,
        master_user_separator: str = "*",
        users: Mapping[str, UserSpec] | None = None,
        master_users: Mapping[str, str] | None = None,
        directory: Path | None = None,
        tls: TlsFiles | None = None,
        oauth_introspection_url: str | None = None,
        oauth_scopes: str = "",
        imap_capability: str | None = None,
    ) -> None:
        self.master_user_separator = master_user_separator
        self._users: dict[str, UserSpec] = dict(users or {})
        for name in self._users:
            self._check_user_name(name)
        # Not pytest's tmp_path: that is 0700, and Dovecot's users must traverse the path.
        super().__init__(directory, prefix="migrator-dovecot-")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)
        self.master_users: dict[str, str] = dict(
            master_users if master_users is not None else {MASTER_USER: MASTER_PASSWORD}
        )
        self.tls = tls if tls is not None else make_tls_files(self.dir / "tls")

        self.base_dir = self.dir / "run"
        self.state_dir = self.dir / "state"
        self.mail_dir = self.dir / "mail"
        self.log_path = self.dir / "dovecot.log"
        self.config_path = self.dir / "dovecot.conf"
        # One passwd-file per user (see add_user), named by the lowercased login name.
        self.users_dir = self.dir / "users.d"
        self.master_users_path = self.dir / "master-users"
        # None when dovecot-lmtpd is not installed.
        self.lmtp_socket: Path | None = self.base_dir / "lmtp" if LMTP_AVAILABLE else None

        (
            self.imap_port,
            self.imaps_port,
            self.pop3_port,
            self.pop3s_port,
            self.sieve_port,
        ) = free_ports(5)

        self.config = DovecotConfig(
            instance_name=f"migrator-test-{self.imap_port}",
            base_dir=self.base_dir,
            state_dir=self.state_dir,
            log_path=self.log_path,
            tls=self.tls,
            master_user_separator=master_user_separator,
            users_dir=self.users_dir,
            master_users_path=self.master_users_path,
            imap_port=self.imap_port,
            imaps_port=self.imaps_port,
            pop3_port=self.pop3_port,
            pop3s_port=self.pop3s_port,
            sieve_port=self.sieve_port,
            identity=identity(),
            oauth2_args=self.dir / "dovecot-oauth2.conf.ext" if oauth_introspection_url else None,
            imap_capability=imap_capability,
        )
        self._oauth = (oauth_introspection_url, oauth_scopes)

    # -- users --------------------------------------------------------------------------------

    @property
    def users(self) -> Mapping[str, UserSpec]:
        return dict(self._users)

    def home(self, name: str) -> Path:
        return self.mail_dir / name

    def add_user(self, name: str, password: str, quota_bytes: int | None = None) -> None:
        """Create (or replace) a user, who can log in at once, with no reload.

        Names must be lowercase: Dovecot lowercases login names (auth_username_format = %Lu), so
        "Alice@Example.test" logs in as "alice@example.test". "@" and "." are fine.

        Dovecot re-reads a changed passwd-file at most once a second, and only when its mtime
        (in whole seconds) or size changed, which would let a login in the same second miss a
        new user. Each user therefore has a file of their own, which Dovecot first opens at that
        user's first login. Replacing an existing user takes one to two seconds instead, so that
        the change is seen; sessions already open keep the old quota.
        """
        self._check_user_name(name)
        replacing = name in self._users and self.running
        if replacing:
            written = int((self.users_dir / name).stat().st_mtime)
            while int(time.time()) == written:
                time.sleep(0.05)
        self._users[name] = UserSpec(password, quota_bytes)
        self._write_user(name)
        if replacing:
            time.sleep(1.05 - time.time() % 1)

    def _check_user_name(self, name: str) -> None:
        # The name is a file name in users_dir, and "user*admin" must split at one place only.
        if (
            not name
            or name != name.lower()
            or "/" in name
            or name.startswith(".")
            or self.master_user_separator in name
        ):
            raise ValueError(
                f"user names must be lowercase, without '/' or {self.master_user_separator!r}"
                f" and not start with '.': {name!r}"
            )

    def master_login(self, user: str, master: str = MASTER_USER) -> str:
        """The LOGIN name that lets master user *master* in as *user*, e.g. "user*admin"."""
        return f"{user}{self.master_user_separator}{master}"

    def _write_user(self, name: str) -> None:
        spec = self._users[name]
        # The "B" makes the limit bytes; a bare number would mean kilobytes.
        extra = (
            "" if spec.quota_bytes is None else f"userdb_quota_rule=*:storage={spec.quota_bytes}B"
        )
        self.users_dir.mkdir(exist_ok=True)
        self.users_dir.chmod(0o755)
        _write_atomically(
            self.users_dir / name, _passwd_line(name, spec.password, self.home(name), extra)
        )

    def _write_master_users(self) -> None:
        lines = [_passwd_line(name, pw) for name, pw in self.master_users.items()]
        _write_atomically(self.master_users_path, "".join(lines))

    def _write_oauth2_args(self) -> None:
        """The oauth2 passdb's settings: RFC 7662 introspection by POST, the token good for
        any user of the domain it names (an app-only token names its tenant's), and only
        with one of `oauth_scopes` (Exchange's IMAP.AccessAsApp and the like)."""
        url, scopes = self._oauth
        if self.config.oauth2_args is None or url is None:
            return
        # The auth process reads the CA as Dovecot's internal user: a copy it can reach.
        ca = self.dir / "oauth-ca.pem"
        ca.write_bytes(self.tls.ca_cert.read_bytes())
        ca.chmod(0o644)
        lines = [
            "introspection_mode = post",
            f"introspection_url = {url}",
            "username_attribute = username",
            "username_format = %Ld",
            "active_attribute = active",
            "active_value = true",
            f"tls_ca_cert_file = {ca}",
            "timeout_msecs = 5000",
        ]
        if scopes:
            lines.append(f"scope = {scopes}")
        _write_atomically(self.config.oauth2_args, "\n".join(lines) + "\n")

    # -- configuration ------------------------------------------------------------------------

    def config_text(self) -> str:
        return render_config(self.config)

    def _prepare(self) -> None:
        for path in (self.base_dir, self.state_dir, self.mail_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        for name in self._users:
            self._write_user(name)
        self._write_master_users()
        self._write_oauth2_args()
        if os.geteuid() == 0:
            os.chown(self.mail_dir, self.config.identity.mail_uid, self.config.identity.mail_gid)
        self.mail_dir.chmod(0o755)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, *, timeout: float = 10.0) -> DovecotServer:
        if self._process is not None:
            raise RuntimeError("Dovecot is already running")
        self._prepare()
        # -F keeps the master in the foreground, so Popen owns it and its exit is observable.
        return self._spawn([DOVECOT, "-F", "-c", str(self.config_path)], "dovecot.stdout", timeout)

    def _wait_until_ready(self, timeout: float) -> None:
        assert self._process is not None
        deadline = time.monotonic() + timeout
        for port in (self.imap_port, self.imaps_port, self.pop3_port, self.sieve_port):
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"dovecot exited with {self._process.returncode}:\n{self.log_text()}"
                    )
                try:
                    wait_for_port(port, timeout=0.2)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"dovecot does not listen on {port}:\n{self.log_text()}"
                        ) from None

    @property
    def instance_name(self) -> str:
        return self.config.instance_name

    def child_pids(self) -> set[int]:
        """Pids of this instance's live processes other than the master (imap, auth, log, ...).

        Found by command line, which still finds them once orphaned: either Dovecot's title
        "dovecot-<instance_name>/<service>" (the instance name holds a port we own), or, in a
        child not yet retitled, the master's own command line with our config path.
        """
        title = f"dovecot-{self.instance_name}/".encode()
        config = os.fsencode(self.config_path)
        master = None if self._process is None else self._process.pid
        pids: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == master:
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if (cmdline.startswith(title) or config in cmdline.split(b"\0")) and _is_alive(
                int(entry.name)
            ):
                pids.add(int(entry.name))
        return pids

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM the master and wait; then SIGKILL what is left of the instance.

        The master ends its children before it exits (about 1 s), except the log process, which
        lingers for seconds after; killing it loses nothing, every line is already written.
        """
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        deadline = time.monotonic() + timeout
        while pids := self.child_pids():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if time.monotonic() > deadline:
                raise RuntimeError(f"Dovecot processes {sorted(pids)} survived SIGKILL")
            time.sleep(0.02)

    def reload(self) -> None:
        """Make the master re-read its configuration (SIGHUP via doveadm)."""
        self.doveadm("reload")

    def doveadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c CONFIG ARGS`` against this instance, e.g. ("quota", "get", "-u", u)."""
        return subprocess.run(
            [DOVEADM, "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            check=check,
        )

    def deliver(
        self, user: str, message: bytes, *, submission_host: str | None = None, sender: str = ""
    ) -> subprocess.CompletedProcess[bytes]:
        """Deliver `message` to `user` as the MTA would, through dovecot-lda: the user's
        active Sieve script runs; a `redirect` goes out by SMTP to `submission_host`."""
        overrides = ["-o", f"submission_host={submission_host}"] if submission_host else []
        return subprocess.run(
            [DOVECOT_LDA, "-c", str(self.config_path), "-d", user, *overrides]
            + (["-f", sender] if sender else []),
            input=message,
            capture_output=True,
            check=True,
        )


__all__ = [
    "DEFAULT_USER_PASSWORD",
    "DOVECOT_LDA",
    "LMTP_AVAILABLE",
    "MASTER_PASSWORD",
    "MASTER_USER",
    "NON_ASCII_MASTER_PASSWORD",
    "NON_ASCII_MASTER_USER",
    "OVERQUOTA_TEXT",
    "SPECIAL_USE_FOLDERS",
    "DovecotServer",
    "MakeUser",
    "UserSpec",
]


class SizeLimitedDovecot(DovecotServer):
    """Dovecot refusing any message over 64 KB: `quota_max_mail_size`, answered with
    NO [LIMIT] Mail size is larger than the maximum size allowed by server configuration."""

    def config_text(self) -> str:
        return super().config_text() + "\nplugin {\n  quota_max_mail_size = 64k\n}\n"

"""Dovecot 2.3 configuration for the test servers: who runs it, and the generated dovecot.conf.

Pure apart from looking up (and, as root, creating) system accounts; DovecotServer writes the
result to a file and runs ``dovecot -F -c`` on it. ``doveconf -n -c FILE`` shows what Dovecot
made of it.
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .certs import TlsFiles
from .ports import LOOPBACK

# LMTP comes in its own Debian package (dovecot-lmtpd), which may be missing; local delivery
# through dovecot-lda (in dovecot-core) runs the same Sieve scripts.
LMTP_AVAILABLE = Path("/usr/lib/dovecot/lmtp").exists()

# When the tests run as root, mail is stored as this unprivileged system user: Dovecot refuses
# to access mail as root, and root-owned mail would hide permission bugs.
MAIL_USER = "migratormail"

# RFC 6154 SPECIAL-USE folders every account has from its first login (auto = subscribe).
SPECIAL_USE_FOLDERS = {"Drafts": "\\Drafts", "Junk": "\\Junk", "Trash": "\\Trash", "Sent": "\\Sent"}
# A folder flagged \All (RFC 6154) when a test creates it, as Gmail's All Mail: a real
# folder here, so a test can put in it what a Gmail account shows there.
ALL_MAIL_FOLDER = "[Gmail]/All Mail"
# The rest of a Gmail account's system folders, flagged as Gmail flags them (RFC 6154; \Important
# is RFC 8457), created only when a test makes them (tests/gmailkit.py).
GMAIL_FOLDERS = {
    ALL_MAIL_FOLDER: "\\All",
    "[Gmail]/Sent Mail": "\\Sent",
    "[Gmail]/Drafts": "\\Drafts",
    "[Gmail]/Starred": "\\Flagged",
    "[Gmail]/Important": "\\Important",
    "[Gmail]/Spam": "\\Junk",
    "[Gmail]/Trash": "\\Trash",
}


@dataclass(frozen=True)
class Identity:
    """The system accounts Dovecot's processes and mail files run as."""

    internal_user: str
    internal_group: str
    login_user: str
    mail_uid: int
    mail_gid: int


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    result = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        # A parallel test process may have created it first (useradd then exits with 9).
        return pwd.getpwnam(name)
    except KeyError:
        raise RuntimeError(f"could not create system user {name}: {result.stderr}") from None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def identity() -> Identity:
    if os.geteuid() != 0:
        # Without root Dovecot cannot switch users: every process and every file is ours.
        me = pwd.getpwuid(os.geteuid()).pw_name
        my_group = grp.getgrgid(os.getegid()).gr_name
        return Identity(me, my_group, me, os.geteuid(), os.getegid())
    mail = _ensure_system_user(MAIL_USER)
    # The Debian package creates dovecot and dovenull; fall back to the mail user elsewhere.
    if _user_exists("dovecot") and _group_exists("dovecot"):
        internal, internal_group = "dovecot", "dovecot"
    else:
        internal, internal_group = MAIL_USER, grp.getgrgid(mail.pw_gid).gr_name
    login = "dovenull" if _user_exists("dovenull") else MAIL_USER
    return Identity(internal, internal_group, login, mail.pw_uid, mail.pw_gid)


@dataclass(frozen=True)
class DovecotConfig:
    """Everything that varies between two test instances: paths, ports, accounts."""

    instance_name: str
    base_dir: Path
    state_dir: Path
    log_path: Path
    tls: TlsFiles
    master_user_separator: str
    users_dir: Path  # one passwd-file per user, named like the user
    master_users_path: Path
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    sieve_port: int
    identity: Identity
    # The oauth2 passdb's settings file (dovecot-oauth2.conf.ext): OAUTHBEARER and XOAUTH2
    # logins checked against the test OAuth server; None: passwords only.
    oauth2_args: Path | None = None
    # The IMAP CAPABILITY list, instead of Dovecot's own (a server without some extension,
    # such as RFC 7162 CONDSTORE and QRESYNC); None: Dovecot's.
    imap_capability: str | None = None


def render_config(c: DovecotConfig) -> str:
    """The text of dovecot.conf for *c*."""
    special = "\n".join(
        f"  mailbox {name} {{\n    special_use = {flag}\n    auto = subscribe\n  }}"
        for name, flag in SPECIAL_USE_FOLDERS.items()
    ) + "".join(
        f'\n  mailbox "{name}" {{\n    special_use = {flag}\n    auto = no\n  }}'
        for name, flag in GMAIL_FOLDERS.items()
    )

    # Login processes chroot by default, which needs root; tests gain nothing from it, so
    # root and non-root runs use the same unchrooted services.
    no_chroot = "\n".join(
        f"service {name} {{\n  chroot =\n}}"
        for name in ("ipc", "imap-login", "pop3-login", "managesieve-login")
    )
    mechanisms = "plain login"
    oauth2_passdb = ""
    if c.oauth2_args is not None:
        mechanisms = "plain login oauthbearer xoauth2"
        # Passwords go to the passwd-files, tokens to the OAuth server: each passdb sees
        # only its own mechanisms.
        oauth2_passdb = f"""
passdb {{
  driver = oauth2
  mechanisms = oauthbearer xoauth2
  args = {c.oauth2_args}
}}"""
    password_mechanisms = "\n  mechanisms = plain login" if c.oauth2_args else ""
    imap_capability = (
        f"\n  imap_capability = {c.imap_capability}" if c.imap_capability is not None else ""
    )
    lmtp_service = (
        "service lmtp {\n  unix_listener lmtp {\n    mode = 0666\n  }\n}" if LMTP_AVAILABLE else ""
    )
    return f"""\
# Generated by tests/servers/dovecot_config.py for one test run.
instance_name = {c.instance_name}
base_dir = {c.base_dir}
state_dir = {c.state_dir}
log_timestamp = "%H:%M:%S.%{{usecs}} "
log_path = {c.log_path}
info_log_path = {c.log_path}
auth_verbose = yes

protocols = imap pop3 sieve{" lmtp" if LMTP_AVAILABLE else ""}
listen = {LOOPBACK}
ssl = yes
ssl_cert = <{c.tls.server_cert}
ssl_key = <{c.tls.server_key}
ssl_min_protocol = TLSv1.2
# Tests log in with plaintext LOGIN on the STARTTLS port too; STARTTLS stays on offer.
disable_plaintext_auth = no
auth_mechanisms = {mechanisms}
auth_master_user_separator = {c.master_user_separator}
# Wrong-password tests should not wait the default 2 s.
auth_failure_delay = 0

default_internal_user = {c.identity.internal_user}
default_internal_group = {c.identity.internal_group}
default_login_user = {c.identity.login_user}
mail_uid = {c.identity.mail_uid}
mail_gid = {c.identity.mail_gid}
first_valid_uid = {c.identity.mail_uid}
first_valid_gid = {c.identity.mail_gid}
mail_location = sdbox:~/mail
# Test mail is disposable; skipping fsync makes populating thousands of messages fast.
mail_fsync = never
postmaster_address = postmaster@example.test

namespace inbox {{
  inbox = yes
  prefix =
  separator = /
{special}
}}

passdb {{
  driver = passwd-file
  args = scheme=PLAIN {c.master_users_path}
  master = yes{password_mechanisms}
  # The user logged in as must exist in the passdb below too.
  result_success = continue
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {c.users_dir}/%u{password_mechanisms}
}}{oauth2_passdb}
userdb {{
  driver = passwd-file
  args = {c.users_dir}/%u
}}

mail_plugins = $mail_plugins quota
protocol imap {{
  mail_plugins = $mail_plugins imap_quota
  mail_max_userip_connections = 1000{imap_capability}
}}
protocol pop3 {{
  mail_max_userip_connections = 1000
}}
protocol lmtp {{
  mail_plugins = $mail_plugins sieve
}}
protocol lda {{
  mail_plugins = $mail_plugins sieve
}}
plugin {{
  quota = count:User quota
  quota_vsizes = yes
  sieve = file:~/sieve;active=~/.dovecot.sieve
}}

service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {c.imap_port}
  }}
  inet_listener imaps {{
    address = {LOOPBACK}
    port = {c.imaps_port}
    ssl = yes
  }}
}}
# A session maps each folder's index cache: a million-message mailbox read through by
# dsync and the bench's check holds caches of 17 to 162 MB a folder, and with the default
# 256 MB of address space an imap process switching folders failed to open one with
# "mmap() failed: Cannot allocate memory" (Dovecot's advice for large mailboxes: raise it).
service imap {{
  vsz_limit = 1G
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {LOOPBACK}
    port = {c.pop3_port}
  }}
  inet_listener pop3s {{
    address = {LOOPBACK}
    port = {c.pop3s_port}
    ssl = yes
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    address = {LOOPBACK}
    port = {c.sieve_port}
  }}
}}
{lmtp_service}
# Mode 0 removes the socket through which auth asks anvil to slow down clients after failed
# logins (2 s up to 15 s per IP). Every test connects from 127.0.0.1, so one wrong-password test
# would otherwise slow down every login after it.
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
{no_chroot}
"""

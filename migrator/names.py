"""What a host name and a mail address may look like (pure: text in, a problem or None
out), for the batch CSV and the rewrite maps."""

from __future__ import annotations

import functools
import ipaddress
import re

from migrator.csvtable import CONTROL

_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_LOCAL_SPECIALS = re.compile(r'[\s"(),:;<>\[\\\]]')  # RFC 5322 specials, unquoted local part


def hostname_problem(host: str) -> str | None:
    if not host:
        return "the server address has no host name"
    labels = host.split(".")
    if all(label.isascii() and label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "the host is not an IPv4 address"
        return None
    return domain_problem(host)


@functools.lru_cache(maxsize=4096)
def domain_problem(domain: str, what: str = "host") -> str | None:
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
    return domain_problem(domain, what="domain")

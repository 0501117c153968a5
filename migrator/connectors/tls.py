"""The TLS context every connector connects with: the system CAs, or the operator's
--ca-file, and no checks only where the operator said --insecure; and the errors of a
connection that every connector's translation shares (an untrusted certificate, a
connection refused or lost)."""

from __future__ import annotations

import functools
import os
import ssl
import threading

from migrator.errors import ErrorCode, PermanentError
from migrator.model import ConnectOptions

_making = threading.Lock()  # tls_context's: one maker at a time


def tls_context(options: ConnectOptions) -> ssl.SSLContext:
    """One context for every connection with these options: loading the system's CA store
    takes 10 to 20 ms, which a mailbox's eight connections would pay eight times.  A
    --ca-file that changes (its modification time), or SSL_CERT_FILE or SSL_CERT_DIR set
    otherwise, gets a new one."""
    stamp = None
    if options.ca_file:
        try:
            stamp = os.stat(options.ca_file).st_mtime_ns
        except OSError:
            stamp = None  # create_default_context says what is wrong with it
    # The system's trust, as OpenSSL finds it: where these point when the context is made.
    trust = (os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    # A mailbox opens its source and target (and its lanes) at once: on a cold cache each
    # would load the CA store itself.
    with _making:
        return _context(options.ca_file, stamp, trust, options.insecure)


@functools.lru_cache(maxsize=16)
def _context(
    ca_file: str | None,
    _stamp: int | None,
    _trust: tuple[str | None, str | None],
    insecure: bool,
) -> ssl.SSLContext:
    # Shared across threads: OpenSSL's contexts are, and nobody changes one once made.
    context = ssl.create_default_context(cafile=ca_file)
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def untrusted(exc: ssl.SSLCertVerificationError, what: str) -> PermanentError:
    """A server certificate this machine does not trust: retrying cannot make it trusted."""
    return PermanentError(
        f"{what}: TLS certificate not trusted: {exc.verify_message}; "
        "give --ca-file, or --insecure to skip the check",
        code=ErrorCode.CERTIFICATE,
    )


def lost_code(exc: BaseException) -> ErrorCode:
    """The code of a connection that broke or never came: refused (no service there), or
    lost (resets, timeouts, TLS alerts, closed streams)."""
    return (
        ErrorCode.CONNREFUSED if isinstance(exc, ConnectionRefusedError) else ErrorCode.CONNECTION
    )

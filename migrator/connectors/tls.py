"""The TLS context every connector connects with: the system CAs, or the operator's
--ca-file, and no checks only where the operator said --insecure."""

from __future__ import annotations

import ssl

from migrator.model import ConnectOptions


def tls_context(options: ConnectOptions) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.ca_file)
    if options.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context

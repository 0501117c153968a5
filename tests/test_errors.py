"""Error codes: each library's errors become ours, class and code, at one function per library
(imapconn.imap_error, pop3.pop_error, ewsaccount.translate, managesieve.sieve_error); callers
branch on the code, so these tables are what every decision downstream rests on."""

from __future__ import annotations

import ssl

import pytest

from migrator.errors import (
    BadBatchRow,
    ConfigError,
    ErrorCode,
    FolderRefused,
    LockLost,
    LoginFailed,
    MailboxNotReady,
    MessageRefused,
    MigrationError,
    PayloadTampered,
    PermanentError,
    QuotaExceeded,
    TransientError,
)

WHAT = "target mailbox a@example.test"


def _untrusted() -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_message = "self-signed certificate"  # what OpenSSL's handshake sets
    return error


# -- the hierarchy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigError("x"), ErrorCode.CONFIG),
        (BadBatchRow(3, "login", "empty"), ErrorCode.BATCH),
        (LockLost("x"), ErrorCode.LOCKLOST),
        (TransientError("x"), ErrorCode.TRANSIENT),
        (PermanentError("x"), ErrorCode.REFUSED),
        (LoginFailed("x"), ErrorCode.AUTHENTICATIONFAILED),
        (FolderRefused("x"), ErrorCode.REFUSED),
        (MessageRefused("x"), ErrorCode.REFUSED),
        (QuotaExceeded("x"), ErrorCode.OVERQUOTA),
        (MailboxNotReady("x"), ErrorCode.NOTREADY),
        (PayloadTampered("x"), ErrorCode.TAMPERED),
    ],
)
def test_every_error_has_its_class_code(error: MigrationError, code: ErrorCode) -> None:
    assert error.code is code


def test_a_code_given_overrides_the_class_code_and_leaves_the_message_alone() -> None:
    error = MessageRefused("folder 'INBOX': [LIMIT] too big", code=ErrorCode.LIMIT)
    assert error.code is ErrorCode.LIMIT and MessageRefused("x").code is ErrorCode.REFUSED
    assert str(error) == "folder 'INBOX': [LIMIT] too big"
    assert error.args == ("folder 'INBOX': [LIMIT] too big",)

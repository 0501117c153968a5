"""Error codes: each library's errors become ours, class and code, at one function per library
(imapconn.imap_error, pop3.pop_error, ewsaccount.translate, managesieve.sieve_error); callers
branch on the code, so these tables are what every decision downstream rests on."""

from __future__ import annotations

import imaplib
import poplib
import ssl

import pytest
import requests
from exchangelib import errors as ews
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError

from migrator.connectors.ews.account import translate
from migrator.connectors.imap.connection import imap_error, imap_errors, response_code
from migrator.connectors.imap.managesieve import Response, sieve_error
from migrator.connectors.pop3.source import pop_error
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


# -- IMAP: imapclient, imaplib, socket ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("[OVERQUOTA] Quota exceeded", "OVERQUOTA"),
        ("append failed: [OVERQUOTA] Quota exceeded (mailbox for user is full)", "OVERQUOTA"),
        ("b'SETQUOTA' failed: [LIMIT] Too many", "LIMIT"),
        ("select failed: [NONEXISTENT] Mailbox doesn't exist: x", "NONEXISTENT"),
        ("APPEND command error: BAD [b'[LIMIT] Line too long']", "LIMIT"),
        ("login failed: [authenticationfailed] lower case", "AUTHENTICATIONFAILED"),
        ("[BADCHARSET (UTF-8)] Unsupported charset", "BADCHARSET"),
        ("append failed: Mail rejected", None),
        # A word in brackets later in the text is the server's prose, not its code.
        ("select failed: Mailbox doesn't exist: [OVERQUOTA]", None),
        ("create failed: Invalid name [INUSE]", None),
        ("", None),
    ],
)
def test_response_code_is_read_where_the_server_puts_it(text: str, code: str | None) -> None:
    assert response_code(text) == code


@pytest.mark.parametrize(
    ("raised", "login", "kind", "code"),
    [
        (LoginError("b'[AUTHENTICATIONFAILED] Authentication failed.'"), None,
         LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        (LoginError("b'[AUTHORIZATIONFAILED] Not allowed'"), None,
         LoginFailed, ErrorCode.AUTHORIZATIONFAILED),
        (IMAPClientError("login failed: Bad password"), "u",
         LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        (IMAPClientError("[OVERQUOTA] odd at login"), "u",
         LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        # RFC 5530: the authentication backend is down, not the password wrong.
        (LoginError("b'[UNAVAILABLE] Temporary authentication failure.'"), "u",
         TransientError, ErrorCode.UNAVAILABLE),
        (IMAPClientError("append failed: [OVERQUOTA] Quota exceeded"), None,
         QuotaExceeded, ErrorCode.OVERQUOTA),
        (IMAPClientError("append failed: [LIMIT] Mail size is larger"), None,
         TransientError, ErrorCode.LIMIT),
        (imaplib.IMAP4.error("SELECT failed: [UNAVAILABLE] Backend down"), None,
         TransientError, ErrorCode.UNAVAILABLE),
        (imaplib.IMAP4.error("[INUSE] Mailbox locked"), None, TransientError, ErrorCode.INUSE),
        (IMAPClientError("fetch failed: [SERVERBUG] Internal error"), None,
         TransientError, ErrorCode.SERVERBUG),
        (IMAPClientError("create failed: [ALREADYEXISTS] Mailbox already exists"), None,
         PermanentError, ErrorCode.ALREADYEXISTS),
        (IMAPClientError("select failed: [NONEXISTENT] Mailbox doesn't exist: x"), None,
         PermanentError, ErrorCode.NONEXISTENT),
        (IMAPClientError("append failed: [TRYCREATE] Mailbox doesn't exist: x"), None,
         PermanentError, ErrorCode.NONEXISTENT),
        (IMAPClientError("append failed: [CANNOT] Invalid"), None,
         PermanentError, ErrorCode.REFUSED),
        (IMAPClientError("select failed: Mailbox doesn't exist: [OVERQUOTA]"), None,
         PermanentError, ErrorCode.REFUSED),
        (imaplib.IMAP4.abort("socket error: EOF"), None, TransientError, ErrorCode.CONNECTION),
        (IMAPClientAbortError("command: FETCH => Server shutting down"), None,
         TransientError, ErrorCode.CONNECTION),
        (TimeoutError("The read operation timed out"), None,
         TransientError, ErrorCode.CONNECTION),
        (ConnectionResetError(104, "Connection reset by peer"), None,
         TransientError, ErrorCode.CONNECTION),
        (ConnectionRefusedError(111, "Connection refused"), None,
         TransientError, ErrorCode.CONNREFUSED),
        (_untrusted(), None, PermanentError, ErrorCode.CERTIFICATE),
    ],
)  # fmt: skip
def test_imap_errors_become_ours_with_the_servers_code(
    raised: BaseException, login: str | None, kind: type[MigrationError], code: ErrorCode
) -> None:
    error = imap_error(raised, WHAT, login=login)
    assert (type(error), error.code) == (kind, code)
    assert str(error).startswith(f"{WHAT}: ")


def test_a_refused_login_names_who_and_drops_the_librarys_chain() -> None:
    with pytest.raises(LoginFailed) as refused, imap_errors(WHAT, login="admin as user"):
        raise LoginError("b'[AUTHENTICATIONFAILED] Authentication failed.'")
    assert str(refused.value) == (
        f"{WHAT}: login admin as user refused: [AUTHENTICATIONFAILED] Authentication failed."
    )
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


# -- POP3: poplib, socket -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "login", "kind", "code"),
    [
        (poplib.error_proto(b"-ERR [AUTH] Authentication failed"), "u",
         LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        (poplib.error_proto(b"-ERR Bad login"), "u", LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        # RFC 2449: another session holds the maildrop; the password is not wrong.
        (poplib.error_proto(b"-ERR [IN-USE] Mailbox locked"), "u",
         TransientError, ErrorCode.INUSE),
        (poplib.error_proto(b"-ERR [LOGIN-DELAY] Wait 60 s"), "u",
         TransientError, ErrorCode.THROTTLED),
        (poplib.error_proto(b"-ERR [SYS/TEMP] Try later"), None,
         TransientError, ErrorCode.UNAVAILABLE),
        (poplib.error_proto(b"-ERR [SYS/PERM] Gone for good"), None,
         PermanentError, ErrorCode.REFUSED),
        (poplib.error_proto(b"-ERR no such message"), None, PermanentError, ErrorCode.REFUSED),
        (poplib.error_proto(b"-ERR no such message [IN-USE]"), None,
         PermanentError, ErrorCode.REFUSED),
        (poplib.error_proto("-ERR EOF"), None, TransientError, ErrorCode.CONNECTION),
        (poplib.error_proto("-ERR EOF"), "u", TransientError, ErrorCode.CONNECTION),
        (ConnectionResetError(104, "reset"), "u", TransientError, ErrorCode.CONNECTION),
        (ConnectionRefusedError(111, "refused"), None, TransientError, ErrorCode.CONNREFUSED),
        (_untrusted(), None, PermanentError, ErrorCode.CERTIFICATE),
    ],
)  # fmt: skip
def test_pop3_errors_become_ours_with_the_servers_code(
    raised: BaseException, login: str | None, kind: type[MigrationError], code: ErrorCode
) -> None:
    error = pop_error(raised, WHAT, login=login)
    assert (type(error), error.code) == (kind, code)
    assert str(error).startswith(f"{WHAT}: ")


# -- EWS: exchangelib, requests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raised", "kind", "code"),
    [
        (ews.UnauthorizedError("401"), LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        (ews.ErrorQuotaExceeded("full"), QuotaExceeded, ErrorCode.OVERQUOTA),
        (ews.ErrorMessageSizeExceeded("big"), MessageRefused, ErrorCode.LIMIT),
        (ews.ErrorItemCorrupt("bad"), MessageRefused, ErrorCode.REFUSED),
        (ews.ErrorNonExistentMailbox("who"), MailboxNotReady, ErrorCode.NOTREADY),
        (ews.ErrorImpersonateUserDenied("no"), MailboxNotReady, ErrorCode.AUTHORIZATIONFAILED),
        (ews.ErrorAccessDenied("no"), MailboxNotReady, ErrorCode.AUTHORIZATIONFAILED),
        (ews.ErrorFolderExists("made"), FolderRefused, ErrorCode.ALREADYEXISTS),
        (ews.ErrorFolderNotFound("gone"), FolderRefused, ErrorCode.NONEXISTENT),
        (ews.ErrorServerBusy("busy", back_off=1), TransientError, ErrorCode.THROTTLED),
        (ews.ErrorTimeoutExpired("slow"), TransientError, ErrorCode.UNAVAILABLE),
        (ews.ErrorMailboxStoreUnavailable("down"), TransientError, ErrorCode.UNAVAILABLE),
        (ews.TransportError("reset"), TransientError, ErrorCode.CONNECTION),
        (requests.ConnectionError("reset"), TransientError, ErrorCode.CONNECTION),
        (ConnectionRefusedError(111, "refused"), TransientError, ErrorCode.CONNREFUSED),
        (ews.TransportError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                            "self-signed certificate (_ssl.c:1006)"),
         PermanentError, ErrorCode.CERTIFICATE),
        (ews.ErrorInvalidRequest("bad"), PermanentError, ErrorCode.REFUSED),
    ],
)  # fmt: skip
def test_exchangelib_errors_become_ours_with_a_code(
    raised: Exception, kind: type[MigrationError], code: ErrorCode
) -> None:
    error = translate(raised, WHAT)
    assert (type(error), error.code) == (kind, code)
    assert str(error).startswith(f"{WHAT}: ")


# -- ManageSieve: our client's socket errors and the server's NO and BYE ----------------------


@pytest.mark.parametrize(
    ("cause", "login", "kind", "code"),
    [
        (Response("NO", "TRYLATER", "Maintenance"), None, TransientError, ErrorCode.UNAVAILABLE),
        (Response("NO", "TRYLATER", "Backend down"), "u", TransientError, ErrorCode.UNAVAILABLE),
        (Response("BYE", "", "Too many connections"), None, TransientError, ErrorCode.CONNECTION),
        (Response("BYE", "", "Shutting down"), "u", TransientError, ErrorCode.CONNECTION),
        (Response("NO", "QUOTA/MAXSIZE", "Script too big"), None,
         PermanentError, ErrorCode.OVERQUOTA),
        (Response("NO", "NONEXISTENT", "No such script"), None,
         PermanentError, ErrorCode.NONEXISTENT),
        (Response("NO", "ALREADYEXISTS", "Exists"), None, PermanentError, ErrorCode.ALREADYEXISTS),
        (Response("NO", "", "line 3: error: unknown command"), None,
         PermanentError, ErrorCode.REFUSED),
        (Response("NO", "", "Authentication failed"), "u",
         LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        (Response("NO", "AUTH-TOO-WEAK", "Use TLS"), "u",
         LoginFailed, ErrorCode.AUTHENTICATIONFAILED),
        (ConnectionRefusedError(111, "Connection refused"), None,
         TransientError, ErrorCode.CONNREFUSED),
        (EOFError("the server closed the connection"), None,
         TransientError, ErrorCode.CONNECTION),
        (TimeoutError("timed out"), None, TransientError, ErrorCode.CONNECTION),
        (_untrusted(), None, PermanentError, ErrorCode.CERTIFICATE),
    ],
)  # fmt: skip
def test_managesieve_answers_and_socket_errors_become_ours_with_a_code(
    cause: BaseException | Response,
    login: str | None,
    kind: type[MigrationError],
    code: ErrorCode,
) -> None:
    error = sieve_error(cause, WHAT, "PUTSCRIPT", login=login)
    assert (type(error), error.code) == (kind, code)
    assert str(error).startswith(f"{WHAT}: ")


def test_an_error_that_is_ours_already_passes_through_untouched() -> None:
    ours = QuotaExceeded("budget spent")
    assert imap_error(ours, WHAT) is ours
    assert pop_error(ours, WHAT) is ours
    assert translate(ours, WHAT) is ours
    assert sieve_error(ours, WHAT) is ours

"""The Graph client's pure parts: how Graph's error answers become migrator's errors (a
table), and waiting for the upload budget (a ledger of our own interface)."""

from __future__ import annotations

import pytest

from migrator.connectors.graph.client import Answer, GraphClient, graph_error
from migrator.connectors.graph.settings import GraphSettings
from migrator.errors import (
    ErrorCode,
    FolderRefused,
    MailboxNotReady,
    MessageRefused,
    PermanentError,
    QuotaExceeded,
    TokenRefused,
    TransientError,
)
from migrator.oauth.config import MICROSOFT_AUTHORITY
from migrator.secrets import Secret


@pytest.mark.parametrize(
    ("status", "code", "kind", "error_code"),
    [
        (507, "ErrorQuotaExceeded", QuotaExceeded, ErrorCode.OVERQUOTA),
        (400, "ErrorQuotaExceeded", QuotaExceeded, ErrorCode.OVERQUOTA),
        (507, "QuotaExceededException", QuotaExceeded, ErrorCode.OVERQUOTA),
        (413, "ErrorMessageSizeExceeded", MessageRefused, ErrorCode.LIMIT),
        (429, "TooManyRequests", TransientError, ErrorCode.THROTTLED),
        (503, "ServiceUnavailable", TransientError, ErrorCode.UNAVAILABLE),
        (504, "", TransientError, ErrorCode.UNAVAILABLE),
        (401, "InvalidAuthenticationToken", TokenRefused, ErrorCode.TOKENREFUSED),
        (404, "ErrorInvalidUser", MailboxNotReady, ErrorCode.NOTREADY),
        (404, "MailboxNotEnabledForRESTAPI", MailboxNotReady, ErrorCode.NOTREADY),
        (403, "ErrorAccessDenied", MailboxNotReady, ErrorCode.NOTREADY),
        (409, "ErrorFolderExists", FolderRefused, ErrorCode.ALREADYEXISTS),
        (404, "ErrorItemNotFound", PermanentError, ErrorCode.NONEXISTENT),
        (400, "ErrorMimeContentConversionFailed", PermanentError, ErrorCode.REFUSED),
    ],
)
def test_graph_errors_become_ours_by_status_and_code(
    status: int, code: str, kind: type[Exception], error_code: ErrorCode
) -> None:
    body = {"error": {"code": code, "message": "said by Graph"}}

    error = graph_error(Answer(status, body, {}), "target mailbox a@example.test")

    assert type(error) is kind
    assert error.code is error_code
    assert "target mailbox a@example.test" in str(error) and "said by Graph" in str(error)


class Ledger:
    """An upload budget that is full twice, then has room."""

    def __init__(self) -> None:
        self.waits = [2.5, 1.0, 0.0]
        self.asked: list[tuple[str, int, int, float]] = []

    def reserve_upload(self, name: str, size: int, limit: int, window: float) -> float:
        self.asked.append((name, size, limit, window))
        return self.waits.pop(0)


def test_an_upload_waits_until_the_mailboxs_budget_has_room() -> None:
    settings = GraphSettings(
        url="https://graph.example.test",
        tenant_id="t",
        client_id="c",
        authority=MICROSOFT_AUTHORITY,
        client_secret=Secret("s"),
    )
    slept: list[float] = []
    ledger = Ledger()
    client = GraphClient(settings, "Box@Example.test", ledger, sleep=slept.append)

    client.reserve(1000)

    assert slept == [2.5, 1.0] and client.throttled_seconds == 3.5
    assert {a[:2] for a in ledger.asked} == {
        ("graph:https://graph.example.test:box@example.test", 1000)
    }
    assert ledger.asked[0][2:] == (150 * 1024 * 1024, 300.0)

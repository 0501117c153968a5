"""A bearer-token login, the same for every protocol: the kept token first; if the server
refuses it (expired early, revoked), one fresh token; if that is refused too, the mailbox
fails saying what to grant."""

from __future__ import annotations

from collections.abc import Callable

from migrator.errors import TokenRefused
from migrator.model import TokenLogin
from migrator.oauth.sasl import refusal_advice
from migrator.secrets import Secret, redact


def bearer_login(
    login: TokenLogin,
    attempt: Callable[[Secret], str | None],
    *,
    protocol: str,
    where: str,
) -> None:
    """Log in with `attempt(token)`, which returns None once the server took the token,
    or the server's words refusing it (never raising for a refusal)."""
    tokens = login.tokens
    token = tokens.token(login.login)
    if attempt(token) is None:
        return
    fresh = tokens.renew(login.login, token)
    refused = attempt(fresh)
    if refused is None:
        return
    said = redact(refused)[:300] or "no reason given"
    advice = refusal_advice(tokens.kind, protocol, login.login, refused)
    raise TokenRefused(
        f"{where}: login as {login.login} with a fresh token from {tokens.describe} "
        f"refused: {said}; {advice}"
    )

"""OAuth 2.0 bearer tokens for every connector: where they come from (providers.py), how
long they are kept and when they are renewed (tokens.py), how they travel in a job
(config.py), and how they are put on the wire (sasl.py, pure).

No protocol library here: msal, google-auth and requests only, each imported when a
provider of its kind is first built.  IMAP, POP3, ManageSieve and Exchange ask a
`Tokens` for a token through `migrator.model.TokenLogin`, and nothing else.
"""

from __future__ import annotations

from migrator.oauth.config import OAuthConfig, ProviderKind
from migrator.oauth.tokens import AccessToken, TokenProvider, Tokens, share_tokens, tokens_for

__all__ = [
    "AccessToken",
    "OAuthConfig",
    "ProviderKind",
    "TokenProvider",
    "Tokens",
    "share_tokens",
    "tokens_for",
]

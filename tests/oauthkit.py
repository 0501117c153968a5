"""What the OAuth 2.0 tests share: an Entra ID app registered with the test OAuth server,
the options that name it, and the administrator who ends a user's sessions once every
token the app holds has run out (Dovecot checks a token at login only, so a copy outlives
its tokens when a session that logs in again needs a new one)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from servers.dovecot import DovecotServer
from servers.oauth_server import TENANT, OAuthServer

from migrator.oauth import OAuthConfig, ProviderKind
from migrator.secrets import Secret


def new_app(oauth: OAuthServer, tmp_path: Path, **kw: object) -> tuple[str, Path]:
    """A registered Entra ID app with a client secret; (client id, secret file)."""
    client_id = f"app-{secrets.token_hex(4)}"
    secret = f"cs~{secrets.token_urlsafe(24)}"
    oauth.add_app(client_id, secret=secret, **kw)  # type: ignore[arg-type]
    path = tmp_path / f"{client_id}.secret"
    path.write_text(secret)
    return client_id, path


def app_config(oauth: OAuthServer, client_id: str, secret_file: Path) -> OAuthConfig:
    """The app as the --oauth-* options below describe it."""
    return OAuthConfig(
        ProviderKind.MICROSOFT,
        tenant=TENANT,
        client_id=client_id,
        authority=oauth.authority,
        secret=Secret(secret_file.read_text()),
    )


def oauth_arguments(oauth: OAuthServer, client_id: str, secret_file: Path) -> list[str]:
    return [
        "--oauth-provider", "microsoft", "--oauth-tenant", TENANT,
        "--oauth-client-id", client_id, "--oauth-client-secret-file", str(secret_file),
        "--oauth-authority", oauth.authority,
    ]  # fmt: skip


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


class Kicker:
    """At each of `at` (messages done, as `done()` reads them), once every token of
    `client_id` has run out, ends the sessions of `users` on `dovecot` (`doveadm kick`):
    the copier logs in again and needs a new token.  `kicked` holds the counts it kicked
    at; `problems` what went wrong (the copy ended before a kick, no session to end)."""

    def __init__(
        self,
        oauth: OAuthServer,
        client_id: str,
        dovecot: DovecotServer,
        users: tuple[str, ...],
        at: tuple[int, ...],
    ) -> None:
        self._oauth, self._client_id = oauth, client_id
        self._dovecot, self._users, self._at = dovecot, users, at
        self.kicked: list[int] = []
        self.problems: list[str] = []
        self._thread: threading.Thread | None = None

    def start(self, done: Callable[[], tuple[int, bool]]) -> Kicker:
        """`done()`: (messages done, whether the mailbox has ended)."""
        self._thread = threading.Thread(target=self._run, args=(done,), daemon=True)
        self._thread.start()
        return self

    def join(self) -> None:
        assert self._thread is not None
        self._thread.join(timeout=300)

    def _run(self, done: Callable[[], tuple[int, bool]]) -> None:
        try:
            for at in self._at:

                def reached(at: int = at) -> bool:
                    count, ended = done()
                    return count >= at or ended

                wait_until(reached, 240, f"{at} messages done")
                life = self._oauth.lifetime
                wait_until(
                    lambda: self._oauth.all_expired(self._client_id), 2 * life + 10, "expiry"
                )
                count, ended = done()
                if ended:
                    self.problems.append(f"the copy ended before kick {len(self.kicked) + 1}")
                    return
                # The source may have read everything already (the reader runs ahead of
                # the writer); the target's session lasts to the end.  68: no such session.
                ended_any = [
                    self._dovecot.doveadm("kick", user, check=False).returncode == 0
                    for user in self._users
                ]
                if not any(ended_any):
                    self.problems.append(f"kick {len(self.kicked) + 1} found no session")
                    return
                self.kicked.append(count)
        except Exception as exc:  # reported by the test, not lost in this thread
            self.problems.append(repr(exc))

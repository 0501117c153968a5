"""Forwarding from an old mailbox to its new address: what to do, given a session.

Three ways, chosen by the source: a Sieve script over ManageSieve (IMAP servers with
Sieve), an inbox rule over EWS (Exchange), or `manual` with the exact instruction for the
operator (POP3, servers without ManageSieve, logins that cannot reach the user's rules).
Every function here is idempotent: `set` twice changes nothing the second time, `remove`
of something not set says so and succeeds.  The sessions are protocols; the adapters
(connectors.imap.managesieve, connectors.ews.rules) and the job side
(migrator.forwardjobs) are elsewhere.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from migrator import sieve
from migrator.model import MailboxJob


class ForwardState(str, enum.Enum):  # noqa: UP042  (str, Enum) as the rest of migrator
    SET = "set"  # mail arriving at the source goes to the target, a copy stays
    REMOVED = "removed"  # ours is gone; what was active before is active again
    NOT_SET = "not_set"  # status: no forwarding of ours
    MANUAL = "manual"  # the operator must do it: detail says exactly what
    REFUSED = "refused"  # we will not: detail says why (a loop, a bad address)
    FAILED = "failed"  # an error: detail names it; running the command again retries


class ForwardAction(str, enum.Enum):  # noqa: UP042
    SET = "set"
    REMOVE = "remove"
    STATUS = "status"


@dataclass(frozen=True)
class ForwardOutcome:
    state: ForwardState
    method: str  # sieve, ews-rule, manual or "" (nothing reached)
    target: str  # the address forwarded to ("" when none)
    detail: str = ""


# -- the checks before anything is sent ------------------------------------------------


def refuse_reason(source_addresses: Sequence[str], target: str) -> str | None:
    """Why forwarding `source` to `target` must not be set, or None."""
    try:
        sieve.check_address(target)
    except ValueError as exc:
        return f"target {exc}"
    wanted = target.strip().lower()
    for address in source_addresses:
        if address.strip().lower() == wanted:
            return (
                f"target {target} is the source mailbox itself: forwarding it to itself would loop"
            )
    return None


def manual_instruction(source: str, target: str, server: str, why: str) -> str:
    return (
        f"{why}: set forwarding by hand on {server}: deliver mail for {source} to {target} "
        f'and keep a copy (a Sieve rule `redirect :copy "{target}";`, the server\'s '
        "forwarding setting with 'keep a copy', or an alias to both addresses)"
    )


# -- Sieve over ManageSieve --------------------------------------------------------------


class ScriptInfo(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def active(self) -> bool: ...


class SieveSession(Protocol):
    """What forwarding needs of a logged-in ManageSieve connection."""

    def sieve_extensions(self) -> set[str]: ...
    def list_scripts(self) -> Sequence[ScriptInfo]: ...
    def get_script(self, name: str) -> str: ...
    def check_script(self, content: str) -> None: ...
    def put_script(self, name: str, content: str) -> None: ...
    def set_active(self, name: str) -> None: ...
    def delete_script(self, name: str) -> None: ...


def _active(session: SieveSession) -> tuple[str | None, bool]:
    """(the active script's name or None, whether a script of ours exists)."""
    scripts = session.list_scripts()
    active = next((s.name for s in scripts if s.active), None)
    return active, any(s.name == sieve.SCRIPT_NAME for s in scripts)


def sieve_set(session: SieveSession, target: str) -> ForwardOutcome:
    extensions = session.sieve_extensions()
    if "copy" not in extensions:
        return ForwardOutcome(
            ForwardState.MANUAL,
            "manual",
            target,
            "the server's Sieve has no `copy` extension, so a redirect would not keep a copy",
        )
    active, _ = _active(session)
    previous = active
    if active == sieve.SCRIPT_NAME:
        marker = sieve.read_marker(session.get_script(active))
        if marker is not None and marker.target == target:
            return ForwardOutcome(ForwardState.SET, "sieve", target, "already set")
        previous = marker.previous if marker is not None else None
    use_include = "include" in extensions
    previous_text = (
        session.get_script(previous) if previous is not None and not use_include else None
    )
    script = sieve.forward_script(target, previous, previous_text, use_include=use_include)
    session.check_script(script)
    session.put_script(sieve.SCRIPT_NAME, script)
    session.set_active(sieve.SCRIPT_NAME)
    how = "including" if use_include else "wrapping"
    kept = f"{how} the user's script {previous!r}" if previous else "no user script was active"
    return ForwardOutcome(ForwardState.SET, "sieve", target, kept)


def sieve_remove(session: SieveSession) -> ForwardOutcome:
    active, ours = _active(session)
    if not ours:
        return ForwardOutcome(ForwardState.REMOVED, "sieve", "", "was not set")
    script = session.get_script(sieve.SCRIPT_NAME)
    marker = sieve.read_marker(script)
    target = marker.target if marker else ""
    detail = "our script was not active; deleted it, left the active script as it is"
    if active == sieve.SCRIPT_NAME:
        previous = marker.previous if marker else None
        names = {s.name for s in session.list_scripts()}
        if previous is not None and previous in names:
            session.set_active(previous)
            detail = f"the user's script {previous!r} is active again"
        else:
            session.set_active("")
            detail = (
                f"the user's script {previous!r} is gone; no script is active"
                if previous
                else "no script was active before; none is now"
            )
    session.delete_script(sieve.SCRIPT_NAME)
    return ForwardOutcome(ForwardState.REMOVED, "sieve", target, detail)


def sieve_status(session: SieveSession) -> ForwardOutcome:
    active, ours = _active(session)
    if active == sieve.SCRIPT_NAME:
        marker = sieve.read_marker(session.get_script(active))
        if marker is not None:
            return ForwardOutcome(ForwardState.SET, "sieve", marker.target)
        return ForwardOutcome(
            ForwardState.FAILED, "sieve", "", f"script {sieve.SCRIPT_NAME!r} has no marker"
        )
    detail = (
        f"script {sieve.SCRIPT_NAME!r} exists but {active or 'no script'!s} is active"
        if ours
        else ""
    )
    return ForwardOutcome(ForwardState.NOT_SET, "sieve", "", detail)


# -- Exchange inbox rules ----------------------------------------------------------------

RULE_TAG = "[migrator]"  # our rules' display names start with it; remove deletes only those


def rule_name(target: str) -> str:
    return f"{RULE_TAG} forward to {target}"


@dataclass(frozen=True)
class InboxRule:
    id: str
    display_name: str
    redirect_to: tuple[str, ...]


class InboxRules(Protocol):
    """What forwarding needs of a mailbox's Exchange inbox rules."""

    def list_rules(self) -> list[InboxRule]: ...
    def create_redirect(self, display_name: str, target: str) -> None: ...
    def delete_rule(self, rule_id: str) -> None: ...


def _ours(rules: InboxRules) -> list[InboxRule]:
    return [r for r in rules.list_rules() if r.display_name.startswith(RULE_TAG)]


def rule_set(rules: InboxRules, target: str) -> ForwardOutcome:
    ours = _ours(rules)
    wanted = [r for r in ours if [a.lower() for a in r.redirect_to] == [target.lower()]]
    if wanted and len(ours) == 1:
        return ForwardOutcome(ForwardState.SET, "ews-rule", target, "already set")
    for rule in ours:  # an older rule of ours to another address: replaced
        rules.delete_rule(rule.id)
    rules.create_redirect(rule_name(target), target)
    return ForwardOutcome(ForwardState.SET, "ews-rule", target, f"inbox rule {rule_name(target)!r}")


def rule_remove(rules: InboxRules) -> ForwardOutcome:
    ours = _ours(rules)
    for rule in ours:
        rules.delete_rule(rule.id)
    if not ours:
        return ForwardOutcome(ForwardState.REMOVED, "ews-rule", "", "was not set")
    target = ", ".join(a for r in ours for a in r.redirect_to)
    return ForwardOutcome(
        ForwardState.REMOVED, "ews-rule", target, f"deleted {len(ours)} rule(s); others untouched"
    )


def rule_status(rules: InboxRules) -> ForwardOutcome:
    ours = _ours(rules)
    if not ours:
        return ForwardOutcome(ForwardState.NOT_SET, "ews-rule", "")
    target = ", ".join(a for r in ours for a in r.redirect_to)
    return ForwardOutcome(ForwardState.SET, "ews-rule", target)


def manual_outcome(action: ForwardAction, job: MailboxJob, why: str) -> ForwardOutcome:
    """`manual`: the exact instruction for the operator, and why it is needed."""
    server = str(job.source_server)
    target = job.target_identity
    if action is ForwardAction.REMOVE:
        detail = (
            f"{why}: remove the forwarding of {job.source_identity} to {target} by hand on {server}"
        )
    elif action is ForwardAction.STATUS:
        detail = f"{why}: check on {server} by hand"
    else:
        detail = manual_instruction(job.source_identity, target, server, why)
    return ForwardOutcome(ForwardState.MANUAL, "manual", target, detail)

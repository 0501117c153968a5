"""Telling people that a batch (or a mailbox) ended: a JSON POST to a webhook and an
e-mail over SMTP, as Exchange's -NotificationEmails does.

The options travel in the batch's meta data (`NotifySettings`): the webhook URL sealed
like a password (a chat webhook's URL is its token), the addresses and the SMTP server
as they are; the SMTP login, where the relay wants one, comes from the worker's
environment.  A notification that cannot be delivered is logged, never fails a mailbox.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from migrator.errors import ConfigError, MigrationError
from migrator.report import MailboxState
from migrator.secrets import Secret, SecretBox, exception_text, redact
from migrator.state import MailboxStatus, StateStore
from migrator.totals import batch_totals

log = logging.getLogger(__name__)

SMTP_USER_ENV = "MIGRATOR_SMTP_USER"
SMTP_PASSWORD_ENV = "MIGRATOR_SMTP_PASSWORD"
DEFAULT_SMTP = "localhost:25"
# Mailboxes listed by name in a notification; the rest are counted (`migrator report`).
LISTED_MAX = 200


@dataclass(frozen=True)
class NotifySettings:
    webhook: Secret | None = None
    emails: tuple[str, ...] = ()
    each_mailbox: bool = False
    smtp_server: str = DEFAULT_SMTP  # host:port
    smtp_from: str = "migrator@localhost"
    smtp_starttls: bool = False

    @property
    def wanted(self) -> bool:
        return self.webhook is not None or bool(self.emails)

    def to_meta(self, box: SecretBox, batch_id: str) -> dict[str, str]:
        """The batch meta fields (the webhook sealed, bound to this batch)."""
        if not self.wanted:
            return {}
        meta = {
            "notify_email": ",".join(self.emails),
            "notify_each": "yes" if self.each_mailbox else "no",
            "smtp_server": self.smtp_server,
            "smtp_from": self.smtp_from,
            "smtp_starttls": "yes" if self.smtp_starttls else "no",
        }
        if self.webhook is not None:
            meta["notify_webhook"] = box.seal(self.webhook, _bound(batch_id))
        return meta

    @classmethod
    def from_meta(cls, meta: Mapping[str, str], box: SecretBox, batch_id: str) -> NotifySettings:
        token = meta.get("notify_webhook")
        webhook = box.open(token, _bound(batch_id), what="the webhook") if token else None
        return cls(
            webhook=webhook,
            emails=tuple(a for a in meta.get("notify_email", "").split(",") if a),
            each_mailbox=meta.get("notify_each") == "yes",
            smtp_server=meta.get("smtp_server") or DEFAULT_SMTP,
            smtp_from=meta.get("smtp_from") or "migrator@localhost",
            smtp_starttls=meta.get("smtp_starttls") == "yes",
        )


def _bound(batch_id: str) -> dict[str, object]:
    return {"secret": "notify_webhook", "batch": batch_id}


def batch_ended_payload(batch_id: str, rows: Sequence[MailboxStatus]) -> dict[str, Any]:
    totals = batch_totals(rows)
    return {
        "event": "batch_ended",
        "batch_id": batch_id,
        "states": {s: n for s, n in totals.states.items() if n},
        "totals": {
            "mailboxes": totals.mailboxes,
            "messages_listed": totals.total_messages,
            "messages_done": totals.done_messages,
            "messages_copied": totals.copied_messages,
            "messages_skipped": totals.skipped_messages,
            "messages_left_by_quota": totals.left_messages,
            "bytes_listed": totals.total_bytes,
            "bytes_done": totals.done_bytes,
        },
        "mailboxes": [_mailbox(r) for r in rows[:LISTED_MAX]],
        "report": f"migrator report {batch_id}",
    }


def _mailbox(row: MailboxStatus) -> dict[str, Any]:
    return {
        "line": row.line,
        "source": row.source_identity,
        "target": row.target_identity,
        "state": row.state.value,
        "messages_done": row.done_messages,
        "messages_listed": row.total_messages,
        "skipped": row.skipped_messages,
        "error": row.last_error,
    }


def notify_mailbox(settings: NotifySettings, batch_id: str, row: MailboxStatus) -> None:
    """A mailbox ended (`--notify-each-mailbox`): the webhook only, not an e-mail each."""
    if settings.each_mailbox and settings.webhook is not None:
        payload = {"event": "mailbox_ended", "batch_id": batch_id, **_mailbox(row)}
        webhook = settings.webhook
        _deliver("webhook", lambda: post_webhook(webhook, payload))


def notify_batch(settings: NotifySettings, store: StateStore, batch_id: str) -> None:
    rows = store.mailboxes(batch_id)
    payload = batch_ended_payload(batch_id, rows)
    if settings.webhook is not None:
        webhook = settings.webhook
        _deliver("webhook", lambda: post_webhook(webhook, payload))
    if settings.emails:
        _deliver("e-mail", lambda: send_email(settings, payload))


def post_webhook(url: Secret, payload: Mapping[str, Any]) -> None:
    import requests  # here, not at the top: most runs never notify (requests: 0.05 s)

    response = requests.post(url.reveal(), json=payload, timeout=15)
    response.raise_for_status()


def send_email(settings: NotifySettings, payload: Mapping[str, Any]) -> None:
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(settings.emails)
    message["Subject"] = email_subject(payload)
    message.set_content(email_body(payload))
    host, _, port = settings.smtp_server.rpartition(":")
    with smtplib.SMTP(host or settings.smtp_server, int(port or 25), timeout=30) as smtp:
        if settings.smtp_starttls:
            smtp.starttls(context=ssl.create_default_context())
        user, password = os.environ.get(SMTP_USER_ENV), os.environ.get(SMTP_PASSWORD_ENV)
        if user and password:
            smtp.login(user, Secret(password).reveal())
        smtp.send_message(message)


def email_subject(payload: Mapping[str, Any]) -> str:
    states = ", ".join(f"{n} {s}" for s, n in payload["states"].items())
    return f"migrator: batch {payload['batch_id']} ended: {states}"


def email_body(payload: Mapping[str, Any]) -> str:
    t = payload["totals"]
    lines = [
        f"Batch {payload['batch_id']} ended.",
        "",
        f"Mailboxes: {t['mailboxes']} ("
        + ", ".join(f"{n} {s}" for s, n in payload["states"].items())
        + ")",
        f"Messages:  {t['messages_done']} of {t['messages_listed']} at the targets "
        f"({t['messages_copied']} copied, {t['messages_skipped']} skipped, "
        f"{t['messages_left_by_quota']} left by quotas)",
        "",
    ]
    bad = [m for m in payload["mailboxes"] if not MailboxState(m["state"]).copied]
    if bad:
        lines.append("Mailboxes not done:")
        lines += [f"  line {m['line']} {m['source']}: {m['state']}: {m['error']}" for m in bad]
        lines.append("")
    lines.append(f"Every mailbox's figures, skipped messages and events: {payload['report']}")
    return "\n".join(lines) + "\n"


def _deliver(what: str, send: Any) -> None:
    try:
        for attempt in Retrying(
            retry=retry_if_exception_type(OSError),  # requests.RequestException is one
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.5, max=5),
            reraise=True,
        ):
            with attempt:
                send()
    except (OSError, smtplib.SMTPException, MigrationError) as exc:
        log.warning("the %s notification was not delivered: %s", what, redact(exception_text(exc)))


def settings_for(store: StateStore, batch_id: str, box: SecretBox) -> NotifySettings | None:
    """The batch's notification settings, None when it asks for none (or they do not
    open: logged)."""
    meta = store.batch_meta(batch_id)
    if not (meta.get("notify_webhook") or meta.get("notify_email")):
        return None
    try:
        return NotifySettings.from_meta(meta, box, batch_id)
    except (ConfigError, MigrationError) as exc:
        log.warning("batch %s: its notification settings do not open: %s", batch_id, exc)
        return None

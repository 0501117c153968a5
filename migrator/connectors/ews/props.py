"""The extended properties a migration writes on Exchange items (delivery and submit
times, flags, the source key that recognises a copy), and small item helpers."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime
from typing import Any

from exchangelib import (
    EWSDateTime,
    ExtendedProperty,
    Message,
)

# -- extended properties --------------------------------------------------------------


class DeliveryTime(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x0E06  # PR_MESSAGE_DELIVERY_TIME: what Exchange shows as DateTimeReceived
    property_type = "SystemTime"


class SubmitTime(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x0039  # PR_CLIENT_SUBMIT_TIME: the sent date
    property_type = "SystemTime"


class MessageFlags(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x0E07  # PR_MESSAGE_FLAGS
    property_type = "Integer"


class FlagStatus(ExtendedProperty):  # type: ignore[misc]
    property_tag = 0x1090  # PR_FLAG_STATUS; exchangelib 5.6 Message has no flag field
    property_type = "Integer"


class SourceKey(ExtendedProperty):  # type: ignore[misc]
    """The content key and digest of the MIME a copy was made from (migrator.recognition),
    so index() recognises it: Exchange rewrites the MIME it stores and serves."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "MigratorSourceKey"
    property_type = "String"


MSGFLAG_READ = 0x1
MSGFLAG_UNSENT = 0x8  # set on drafts only: anything else shows as a draft dated today
FLAG_STATUS_FLAGGED = 2

PROPERTIES = {
    "migrator_delivery_time": DeliveryTime,
    "migrator_submit_time": SubmitTime,
    "migrator_message_flags": MessageFlags,
    "migrator_flag_status": FlagStatus,
    "migrator_source_key": SourceKey,
}
_registered = False
_register_lock = threading.Lock()


def register_properties() -> None:
    """Register the properties on exchangelib's Message (process-wide, once)."""
    global _registered
    with _register_lock:
        if not _registered:
            for name, cls in PROPERTIES.items():
                Message.register(name, cls)
            _registered = True


def dump_key(key: str, digest: str) -> str:
    return json.dumps({"key": key, "digest": digest})


def load_key(text: str | None) -> tuple[str, str] | None:
    """(content key, digest) from the property; None where absent, or written by a
    version before content keys (a JSON list), which recognition cannot use."""
    try:
        data = json.loads(text or "")
    except (TypeError, ValueError):
        return None
    if isinstance(data, dict):
        key, digest = data.get("key"), data.get("digest")
        if isinstance(key, str) and isinstance(digest, str):
            return key, digest
    return None


def ews_datetime(value: datetime) -> Any:
    """A datetime as exchangelib's EWSDateTime (UTC), as its properties require."""
    return EWSDateTime.from_datetime(value.astimezone(UTC))


FINGERPRINT_FIELDS = ("item_class", "subject", "datetime_created")


def fingerprint(item: Any) -> tuple[str, ...]:
    """How a non-mail item (calendar, contact, task) is recognised at an EWS target after
    ExportItems/UploadItems, which keep its class, subject and creation time."""
    created = aware(item.datetime_created)
    return (
        str(item.item_class or ""),
        str(item.subject or ""),
        created.isoformat() if created else "",
    )


def stable_int(text: str) -> int:
    """A stable 63-bit int from an EWS id (a MessageRef uid or uidvalidity)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


def aware(value: object) -> datetime | None:
    """An exchangelib EWSDateTime as a plain aware datetime (UTC)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return datetime.fromtimestamp(value.timestamp(), UTC)

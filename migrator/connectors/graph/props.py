"""The extended MAPI properties a Graph migration reads and writes, by Graph's property
ids, and the source key that recognises a copy (the same property the EWS target
writes, so either connector recognises the other's copies)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

# PS_PUBLIC_STRINGS, the property set EWS calls "PublicStrings".
PUBLIC_STRINGS = "{00020329-0000-0000-C000-000000000046}"
SOURCE_KEY = f"String {PUBLIC_STRINGS} Name MigratorSourceKey"
DELIVERY_TIME = "SystemTime 0x0E06"  # PR_MESSAGE_DELIVERY_TIME: receivedDateTime
SUBMIT_TIME = "SystemTime 0x0039"  # PR_CLIENT_SUBMIT_TIME: sentDateTime
MESSAGE_FLAGS = "Integer 0x0E07"  # PR_MESSAGE_FLAGS
MESSAGE_SIZE = "Integer 0x0E08"  # PR_MESSAGE_SIZE: Graph's message has no size of its own
MSGFLAG_READ = 0x1


def expand_properties(*ids: str) -> str:
    """$expand of the extended properties `ids` (each named in a $filter)."""
    wanted = " or ".join(f"id eq '{i}'" for i in ids)
    return f"singleValueExtendedProperties($filter={wanted})"


def dump_key(key: str, digest: str) -> str:
    return json.dumps({"key": key, "digest": digest})


def load_key(text: str | None) -> tuple[str, str] | None:
    """(content key, digest) from the property, or None where absent or unreadable."""
    try:
        data = json.loads(text or "")
    except (TypeError, ValueError):
        return None
    if isinstance(data, dict):
        key, digest = data.get("key"), data.get("digest")
        if isinstance(key, str) and isinstance(digest, str):
            return key, digest
    return None


def graph_time(value: datetime) -> str:
    """An Edm.DateTimeOffset (and a SystemTime property's value): ISO 8601 in UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)

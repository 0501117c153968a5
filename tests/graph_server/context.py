"""One Graph call as the operations see it, their answer, and Graph's error shape."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from .server import GraphServer
    from .store import Mailbox


@dataclass
class Reply:
    status: int
    body: Any = None  # JSON (dict), bytes (a stream), or None (204)
    headers: dict[str, str] = field(default_factory=dict)
    type_name: str | None = None  # the entity type the JSON body is (checked against the schema)
    collection: bool = False


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.retry_after = retry_after

    def reply(self) -> Reply:
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}
        body = {
            "error": {
                "code": self.code,
                "message": self.message,
                "innerError": {"date": iso(datetime.now(UTC)), "request-id": "test"},
            }
        }
        return Reply(self.status, body, headers)


@dataclass
class Call:
    server: GraphServer
    version: str  # "v1.0" or "beta"
    method: str
    segments: list[str]  # after /users/{user}/
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    mailbox: Mailbox
    json: Any = None

    def violation(self, text: str) -> None:
        self.server.record(f"{self.method} {'/'.join(self.segments)}", text)


def parse_query(text: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


def iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_EQ = re.compile(r"^\s*(\w+)\s+eq\s+'((?:[^']|'')*)'\s*$")


def filter_eq(text: str) -> list[tuple[str, str]]:
    """`a eq 'x' or a eq 'y'` -> [(a, x), (a, y)]; OData doubles a quote inside a literal."""
    found = []
    for part in re.split(r"\s+or\s+", text.strip()):
        match = _EQ.match(part.strip().strip("()"))
        if match is None:
            raise GraphError(400, "BadRequest", f"Invalid filter clause: {part}")
        found.append((match.group(1), match.group(2).replace("''", "'")))
    return found

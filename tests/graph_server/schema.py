"""Microsoft Graph's published v1.0 schema (CSDL, ../shared/graph-schema/v1.0-metadata.xml)
as the test server holds JSON bodies to it: every property exists on the entity or complex
type (or a base type), or is an OData annotation, and every value is of the declared type.

The 3.5 MB document is parsed once per process, with lxml told to resolve no entity and
fetch nothing, as the project's other XML code reads XML.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
NAMESPACE = "microsoft.graph"
SCHEMA_ENV = "MIGRATOR_GRAPH_SCHEMA_DIR"


def schema_dir() -> Path:
    """``$MIGRATOR_GRAPH_SCHEMA_DIR``, else ``shared/graph-schema`` beside the repository."""
    override = os.environ.get(SCHEMA_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "graph-schema"


# ISO 8601 with an offset, as Edm.DateTimeOffset is written in JSON (OData JSON 4.01, 7.1).
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,7})?)?(Z|[+-]\d{2}:\d{2})$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_INTEGERS = {"Edm.Int16", "Edm.Int32", "Edm.Int64", "Edm.Byte", "Edm.SByte"}
_NUMBERS = {"Edm.Double", "Edm.Single", "Edm.Decimal"}
_STRINGS = {"Edm.String", "Edm.Duration", "Edm.TimeOfDay", "Edm.Stream"}


@dataclass
class StructuredType:
    name: str
    base: str | None
    properties: dict[str, str] = field(default_factory=dict)  # name -> declared type


class GraphSchema:
    """The structured and enumeration types of the microsoft.graph namespace."""

    def __init__(self, types: dict[str, StructuredType], enums: dict[str, set[str]]) -> None:
        self.types = types
        self.enums = enums

    @classmethod
    def load(cls, path: Path | None = None) -> GraphSchema:
        path = path or schema_dir() / "v1.0-metadata.xml"
        parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
        root = etree.parse(str(path), parser).getroot()
        types: dict[str, StructuredType] = {}
        enums: dict[str, set[str]] = {}
        for schema in root.iter(f"{EDM}Schema"):
            if schema.get("Namespace") != NAMESPACE:
                continue
            for node in schema:
                tag = node.tag if isinstance(node.tag, str) else ""
                name = node.get("Name", "")
                if tag in (f"{EDM}EntityType", f"{EDM}ComplexType"):
                    found = StructuredType(name, _local(node.get("BaseType")))
                    for prop in node:
                        if prop.tag in (f"{EDM}Property", f"{EDM}NavigationProperty"):
                            found.properties[prop.get("Name", "")] = prop.get("Type", "")
                    types[name] = found
                elif tag == f"{EDM}EnumType":
                    enums[name] = {m.get("Name", "") for m in node.iter(f"{EDM}Member")}
        return cls(types, enums)

    def properties(self, name: str) -> dict[str, str]:
        """Every property of type `name`, its base types' included."""
        merged: dict[str, str] = {}
        current: str | None = name
        while current is not None and current in self.types:
            found = self.types[current]
            merged = {**found.properties, **merged}
            current = found.base
        return merged

    def derives(self, name: str, base: str) -> bool:
        current: str | None = name
        while current is not None:
            if current == base:
                return True
            current = self.types[current].base if current in self.types else None
        return False

    # -- checking --------------------------------------------------------------------------

    def check(self, type_name: str, body: Any) -> list[str]:
        """What is wrong with `body` as a `type_name` (an entity or complex type's name)."""
        errors: list[str] = []
        self._object(type_name, body, type_name, errors)
        return errors

    def check_collection(self, type_name: str, body: Any) -> list[str]:
        """A collection answer: {"value": [...], "@odata.nextLink": ...}."""
        if not isinstance(body, dict) or not isinstance(body.get("value"), list):
            return [f"collection of {type_name}: no 'value' array"]
        errors: list[str] = []
        for key in body:
            if key != "value" and "@" not in key:
                errors.append(f"collection of {type_name}: unknown member {key!r}")
        for n, item in enumerate(body["value"]):
            self._object(type_name, item, f"value[{n}]", errors)
        return errors

    def _object(self, type_name: str, body: Any, path: str, errors: list[str]) -> None:
        if not isinstance(body, dict):
            errors.append(f"{path}: expected a {type_name} object, got {type(body).__name__}")
            return
        declared = body.get("@odata.type")
        if isinstance(declared, str):
            derived = _local(declared.lstrip("#")) or ""
            if derived not in self.types or not self.derives(derived, type_name):
                errors.append(f"{path}: @odata.type {declared!r} is not a {type_name}")
                return
            type_name = derived
        if type_name not in self.types:
            errors.append(f"{path}: no type {type_name!r} in the schema")
            return
        properties = self.properties(type_name)
        for key, value in body.items():
            if "@" in key:
                continue  # an OData annotation (@odata.type, @odata.nextLink, x@odata.y)
            if key not in properties:
                errors.append(f"{path}: {type_name} has no property {key!r}")
                continue
            self._value(properties[key], value, f"{path}.{key}", errors)

    def _value(self, declared: str, value: Any, path: str, errors: list[str]) -> None:
        if value is None:
            return
        if declared.startswith("Collection(") and declared.endswith(")"):
            if not isinstance(value, list):
                errors.append(f"{path}: expected a list of {declared[11:-1]}")
                return
            for n, item in enumerate(value):
                self._value(declared[11:-1], item, f"{path}[{n}]", errors)
            return
        problem = self._scalar(declared, value)
        if problem is None:
            return
        if problem == "structured":
            self._object(_local(declared) or declared, value, path, errors)
        else:
            errors.append(f"{path}: {problem}")

    def _scalar(self, declared: str, value: Any) -> str | None:
        """None if `value` is a good `declared`, "structured" for a type to walk, else why not."""
        if declared in _STRINGS:
            return None if isinstance(value, str) else f"expected {declared}, got {value!r}"
        if declared == "Edm.Boolean":
            return None if isinstance(value, bool) else f"expected Edm.Boolean, got {value!r}"
        if declared in _INTEGERS:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return None if ok else f"expected {declared}, got {value!r}"
        if declared in _NUMBERS:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            return None if ok else f"expected {declared}, got {value!r}"
        if declared == "Edm.DateTimeOffset":
            ok = isinstance(value, str) and _DATETIME.match(value) is not None
            return None if ok else f"expected Edm.DateTimeOffset (ISO 8601), got {value!r}"
        if declared == "Edm.Date":
            ok = isinstance(value, str) and _DATE.match(value) is not None
            return None if ok else f"expected Edm.Date, got {value!r}"
        if declared == "Edm.Guid":
            ok = isinstance(value, str) and _GUID.match(value) is not None
            return None if ok else f"expected Edm.Guid, got {value!r}"
        if declared == "Edm.Binary":
            return None if _is_base64(value) else f"expected Edm.Binary (base64), got {value!r}"
        local = _local(declared) or declared
        if local in self.enums:
            ok = isinstance(value, str) and all(
                v.strip() in self.enums[local] for v in value.split(",")
            )
            return None if ok else f"expected a {local} member, got {value!r}"
        if local in self.types:
            return "structured"
        return f"type {declared!r} is not in the schema"


def _local(name: str | None) -> str | None:
    """`graph.message` or `microsoft.graph.message` -> `message`."""
    if name is None:
        return None
    for prefix in ("microsoft.graph.", "graph."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _is_base64(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


@functools.cache
def load_schema() -> GraphSchema:
    """The schema, parsed once per process."""
    return GraphSchema.load()

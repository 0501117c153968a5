"""The published EWS schema, compiled once: validation of SOAP body and header elements, and the
order of child elements in a schema type (EWS responses must follow ``xs:sequence`` order)."""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

from lxml import etree

XS = "http://www.w3.org/2001/XMLSchema"
SCHEMA_ENV = "MIGRATOR_EWS_SCHEMA_DIR"


def schema_dir() -> Path:
    """``$MIGRATOR_EWS_SCHEMA_DIR``, else ``shared/ews-schema`` beside the repository."""
    override = os.environ.get(SCHEMA_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2].parent / "shared" / "ews-schema"


class EwsSchema:
    """messages.xsd (which imports types.xsd). One instance serves every server in the process."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._schema = etree.XMLSchema(etree.parse(str(directory / "messages.xsd")))
        self._types = etree.parse(str(directory / "types.xsd"))
        self._messages = etree.parse(str(directory / "messages.xsd"))
        # libxml2 schema objects are not documented as thread-safe; the server is threaded.
        self._lock = threading.Lock()

    def error(self, element: etree._Element) -> str | None:
        """None when ``element`` (a global element of messages.xsd or types.xsd) is valid, else
        the first errors libxml2 reports."""
        doc = etree.ElementTree(_detached_copy(element))
        with self._lock:
            if self._schema.validate(doc):
                return None
            return "; ".join(str(e.message) for e in list(self._schema.error_log)[:3])

    @functools.cache  # noqa: B019 - one EwsSchema per process, the cache lives as long
    def child_order(self, type_name: str) -> tuple[str, ...]:
        """Names of the child elements of types.xsd complex type ``type_name``, base type first."""
        node = self._types.find(f"{{{XS}}}complexType[@name='{type_name}']")
        if node is None:
            raise KeyError(type_name)
        names: list[str] = []
        ext = node.find(f"{{{XS}}}complexContent/{{{XS}}}extension")
        if ext is not None:
            names.extend(self.child_order(ext.get("base", "").split(":")[-1]))
            node = ext
        for el in node.iter(f"{{{XS}}}element"):
            name = el.get("name") or el.get("ref", "").split(":")[-1]
            if name and name not in names:
                names.append(name)
        return tuple(names)


def _detached_copy(element: etree._Element) -> etree._Element:
    # Validating the element inside its envelope would validate against the envelope's root.
    return etree.fromstring(etree.tostring(element))


@functools.cache
def load_schema(directory: Path | None = None) -> EwsSchema:
    """The compiled schema for ``directory`` (default: :func:`schema_dir`), loaded once."""
    return EwsSchema(directory or schema_dir())

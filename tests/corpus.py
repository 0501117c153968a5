"""The shared corpus of real messages (../shared/corpus beside the repository, or
$MIGRATOR_CORPUS): every file but *.md, mbox files split on "From " lines."""

from __future__ import annotations

import os
import re
from pathlib import Path

CORPUS = Path(
    os.environ.get("MIGRATOR_CORPUS") or Path(__file__).resolve().parents[2] / "shared" / "corpus"
)

_MBOX_SEPARATOR = re.compile(rb"^(?:\xef\xbb\xbf)?From .*\n", re.MULTILINE)


def corpus_messages() -> list[tuple[str, bytes]]:
    """(name, bytes) of every message; the corpus must be there (CI lays it beside us)."""
    if not CORPUS.is_dir():
        raise FileNotFoundError(f"no corpus at {CORPUS}: set MIGRATOR_CORPUS")
    messages: list[tuple[str, bytes]] = []
    for path in sorted(p for p in CORPUS.rglob("*") if p.is_file() and p.suffix != ".md"):
        data = path.read_bytes()
        name = str(path.relative_to(CORPUS))
        if _MBOX_SEPARATOR.match(data):
            parts = _MBOX_SEPARATOR.split(data)[1:]
            messages.extend((f"{name}#{i}", part) for i, part in enumerate(parts))
        else:
            messages.append((name, data))
    return messages

"""The forwarding Sieve script: pure text in, text out, no server.

Forwarding from an old mailbox is one Sieve script of ours, made active in place of the
user's own.  It does `redirect :copy` to the new address (a copy stays behind) and then
runs the user's active script unchanged: by `include` (RFC 6609) where the server has it,
else by wrapping a copy of the script's text after its `require` lines.  The user's own
script is never edited; ours records, in comment lines, which script was active before,
so `remove` can restore it even when Redis has forgotten.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SCRIPT_NAME = "migrator-forward"

_MARK_TARGET = "# migrator-forward-to: "
_MARK_PREVIOUS = "# migrator-previous-active: "
# An address we write into a Sieve string: no quotes, backslashes, spaces or controls.
_ADDRESS = re.compile(r"[^\s\"\\<>()\[\],;:@\x00-\x1f\x7f]+@[^\s\"\\<>()\[\],;:@\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Marker:
    """What our script says about itself."""

    target: str
    previous: str | None  # the script active before ours; None: there was none


def check_address(address: str) -> str:
    """The address, if it can be a redirect target; ValueError otherwise."""
    if not _ADDRESS.fullmatch(address):
        raise ValueError(f"not a plain mail address: {address!r}")
    return address


def sieve_string(text: str) -> str:
    """A Sieve quoted string (RFC 5228 2.4.2): backslash and double quote escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def forward_script(
    target: str, previous: str | None, previous_text: str | None, *, use_include: bool
) -> str:
    """Our script: redirect a copy to `target`, then the user's `previous` script.

    `previous_text` is that script's content (needed only without include)."""
    check_address(target)
    lines = [
        "# Forwarding set by migrator during a mailbox migration.",
        "# `migrator forwarding remove` makes the script named below active again.",
        _MARK_TARGET + target,
        _MARK_PREVIOUS + json.dumps(previous),
    ]
    redirect = f"redirect :copy {sieve_string(target)};"
    if previous is None:
        return "\n".join([*lines, 'require ["copy"];', redirect, ""])
    if use_include:
        return "\n".join(
            [
                *lines,
                'require ["copy", "include"];',
                redirect,
                f"include :personal {sieve_string(previous)};",
                "",
            ]
        )
    head, rest = split_requires(previous_text or "")
    return (
        "\n".join([*lines, "# The user's script follows, unchanged.", ""])
        + (head + ("" if not head or head.endswith("\n") else "\n"))
        + f'require ["copy"];\n{redirect}\n'
        + rest
    )


def read_marker(script: str) -> Marker | None:
    """The marker of one of our scripts; None when `script` is not ours."""
    target = previous_raw = None
    for line in script.splitlines()[:8]:
        if line.startswith(_MARK_TARGET):
            target = line[len(_MARK_TARGET) :].strip()
        elif line.startswith(_MARK_PREVIOUS):
            previous_raw = line[len(_MARK_PREVIOUS) :].strip()
    if target is None or previous_raw is None:
        return None
    try:
        previous = json.loads(previous_raw)
    except ValueError:
        return None
    if previous is not None and not isinstance(previous, str):
        return None
    return Marker(target=target, previous=previous)


# Leading whitespace and comments, then `require` commands: strings, string lists.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<hash>\#[^\n]*(\n|$))
  | (?P<bracket>/\*.*?\*/)
  | (?P<require>require\b)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<punct>[\[\],;])
    """,
    re.VERBOSE | re.DOTALL | re.IGNORECASE,
)


def split_requires(script: str) -> tuple[str, str]:
    """(the leading comments and `require` commands, everything after them).

    Sieve wants every `require` before the first other command, so our own command goes
    between the two halves.  Scanning stops at the first thing that is not part of a
    require, so a script this does not understand is split early, never mid-command."""
    pos = end = 0
    in_require = False
    while pos < len(script):
        match = _TOKEN.match(script, pos)
        if match is None:
            break
        kind = match.lastgroup
        if kind == "require":
            if in_require:
                break
            in_require = True
        elif kind in ("string", "punct") and not in_require:
            break
        pos = match.end()
        if kind == "punct" and match.group() == ";":
            in_require = False
            end = pos
        elif not in_require and kind in ("space", "hash", "bracket"):
            end = pos
    return script[:end], script[end:]

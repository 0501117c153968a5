"""Where the addresses sit in an address-list header value (RFC 5322 section 3.4).

A small tokenizer of our own rather than ``email._header_value_parser``: that one is private,
and it normalises what it parses.  This one only reports *where* each address's addr-spec is in
the value, so `migrator.rewrite` can replace exactly those characters and keep everything else
(display names, encoded words, comments, folding, line endings) as it was.

It is lenient where real mail is sloppy and the leniency cannot misplace an address:
obs-route (``<@relay:jim@x>``), Outlook's ``;`` between addresses, a group whose ``;`` is
missing, empty list elements (RFC 5322 obs-addr-list) and local parts with no domain.  It gives
up (`AddressListError`) where guessing could rewrite the wrong characters: unbalanced quotes,
comments, angle brackets or domain literals, two angle-addrs with no comma between them, words
after an angle-addr, ``a b@c``, two ``@``, a group inside a group.

Exchange X.500 addresses (legacyExchangeDN, ``/O=CONTOSO/OU=.../CN=JIM``, optionally with the
``EX:`` prefix) are found bare or inside angle brackets.  They hold spaces and parentheses
(``EXCHANGE ADMINISTRATIVE GROUP (FYDIBOHF23SPDLT)``), so inside ``<...>`` the text is taken
as it is, and bare ones run to the end of the list element (trailing comments excluded).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

_WSP = " \t\r\n"  # folding white space; the value still holds its CRLF or LF
_SPECIALS = ',:;@<>()"[]'
# The DN starts with "/" (RFC 1779-ish legacyExchangeDN), or "EX:" names the address type.
_X500_START = re.compile(r"(?:[Ee][Xx]:)?/")


class AddressListError(ValueError):
    """The value cannot be split into addresses with confidence; leave it as it is."""


@dataclass(frozen=True)
class AddrSpec:
    """One local@domain.  Spans are [start, end) offsets into the value.

    `local` and `domain` are the words as written (quotes kept), without any folding white
    space or comments between dot-separated words.  Such comments (RFC 5322 obs-local-part and
    obs-domain: ``jdoe@machine(comment).  example``) lie inside `local_span` or `domain_span`;
    `local_comments` and `domain_comments` say where, so a caller replacing a part can keep them.
    """

    local: str
    domain: str
    span: tuple[int, int]  # first character of the local part to last of the domain
    local_span: tuple[int, int]  # first word of the local part to its last
    domain_span: tuple[int, int]  # first word of the domain to its last
    local_comments: tuple[tuple[int, int], ...]  # each comment's span, in order
    domain_comments: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class X500Address:
    """An Exchange legacyExchangeDN used as an address; `span` includes any ``EX:`` prefix."""

    dn: str
    span: tuple[int, int]


Address = AddrSpec | X500Address


@dataclass(frozen=True)
class _Token:
    kind: str  # ws, comment, quoted, literal, angle, atom, or one of , : ; @
    start: int
    end: int


def find_addresses(value: str, limit: int | None = None) -> list[Address]:
    """The addresses in an address-list (or mailbox-list) value, in order.

    Raises AddressListError if the value cannot be parsed with confidence, or if it has more
    than `limit` list elements that hold something (an address, or a word in its place).
    The work is linear in the length of the value.
    """
    tokens = _lex(value, 0, len(value))
    found: list[Address] = []
    element: list[_Token] = []
    elements = 0
    in_group = False
    for index, token in enumerate(tokens):
        if token.kind in (",", ";"):
            elements += _element(value, element, found)
            if limit is not None and elements > limit:
                raise AddressListError(f"more than {limit} addresses")
            element = []
            if token.kind == ";":  # ends a group; outside one it is Outlook's separator
                in_group = False
        elif token.kind == ":":
            if _is_ex_prefix(value, element, tokens, index):
                element.append(token)
                continue
            if in_group:
                raise AddressListError("a group inside a group")
            if any(t.kind in ("angle", "@") for t in element):
                raise AddressListError("':' after an address")
            element = []  # the group's display name is never rewritten
            in_group = True
        else:
            element.append(token)
    elements += _element(value, element, found)
    if limit is not None and elements > limit:
        raise AddressListError(f"more than {limit} addresses")
    return found


def _is_ex_prefix(value: str, element: list[_Token], tokens: list[_Token], index: int) -> bool:
    """Whether the ':' at tokens[index] is the one in a bare ``EX:/O=...``, not a group's."""
    words = [t for t in element if t.kind != "ws"]
    if len(words) != 1 or value[words[0].start : words[0].end].upper() != "EX":
        return False
    after = tokens[index + 1] if index + 1 < len(tokens) else None
    return after is not None and after.kind == "atom" and value[after.start] == "/"


def _element(value: str, tokens: list[_Token], found: list[Address]) -> bool:
    """One list element: name-addr, bare addr-spec, bare X.500 DN, or nothing (False)."""
    content = [t for t in tokens if t.kind not in ("ws", "comment")]
    if not content:
        return False
    angles = [i for i, t in enumerate(tokens) if t.kind == "angle"]
    if len(angles) > 1:
        raise AddressListError("two <...> addresses without a comma between them")
    if angles:
        angle = tokens[angles[0]]
        if any(t.kind not in ("ws", "comment") for t in tokens[angles[0] + 1 :]):
            raise AddressListError("text after <...>")
        _angle_addr(value, angle.start + 1, angle.end - 1, found)
        return True
    first, last = content[0], content[-1]
    if _X500_START.match(value, first.start):
        found.append(_x500(value, first.start, last.end))
        return True
    _addr_spec(value, tokens, found)
    return True


def _angle_addr(value: str, start: int, end: int, found: list[Address]) -> None:
    while start < end and value[start] in _WSP:
        start += 1
    while end > start and value[end - 1] in _WSP:
        end -= 1
    if start == end:
        return  # "<>", the null address
    if _X500_START.match(value, start):
        found.append(_x500(value, start, end))
        return
    tokens = _lex(value, start, end)
    content = [t for t in tokens if t.kind not in ("ws", "comment")]
    if content and content[0].kind == "@":  # RFC 5322 obs-route: <@relay1,@relay2:jim@x>
        colons = [i for i, t in enumerate(tokens) if t.kind == ":"]
        if not colons:
            raise AddressListError("a source route without ':'")
        tokens = tokens[colons[0] + 1 :]
    _addr_spec(value, tokens, found)


def _x500(value: str, start: int, end: int) -> X500Address:
    dn = value[start:end]
    return X500Address(dn=dn[3:] if dn[:1] in "Ee" else dn, span=(start, end))


def _addr_spec(value: str, tokens: list[_Token], found: list[Address]) -> None:
    content = [t for t in tokens if t.kind not in ("ws", "comment")]
    if not content:
        return
    for token in content:
        if token.kind not in ("atom", "quoted", "literal", "@"):
            raise AddressListError(f"unexpected {value[token.start : token.end]!r} in an address")
    ats = [i for i, t in enumerate(content) if t.kind == "@"]
    if not ats:
        return  # a local part alone ("To: postmaster"): nothing a domain map could hit
    if len(ats) > 1:
        raise AddressListError("more than one '@' in an address")
    local, domain = content[: ats[0]], content[ats[0] + 1 :]
    if not local or not domain:
        raise AddressListError("an address with nothing before or after the '@'")
    if any(t.kind == "literal" for t in local) or any(t.kind == "quoted" for t in domain):
        raise AddressListError("a quoted domain or a bracketed local part")
    _check_dotted(value, local)
    _check_dotted(value, domain)
    local_span = (local[0].start, local[-1].end)
    domain_span = (domain[0].start, domain[-1].end)
    found.append(
        AddrSpec(
            local="".join(value[t.start : t.end] for t in local),
            domain="".join(value[t.start : t.end] for t in domain),
            span=(local_span[0], domain_span[1]),
            local_span=local_span,
            domain_span=domain_span,
            local_comments=_comments_within(tokens, local_span),
            domain_comments=_comments_within(tokens, domain_span),
        )
    )


def _comments_within(tokens: list[_Token], span: tuple[int, int]) -> tuple[tuple[int, int], ...]:
    return tuple(
        (t.start, t.end)
        for t in tokens
        if t.kind == "comment" and span[0] < t.start and t.end < span[1]
    )


def _check_dotted(value: str, words: list[_Token]) -> None:
    """Words of a local part or domain must be joined by dots ("a b@x" is not an address)."""
    for before, after in itertools.pairwise(words):
        if not (value[before.end - 1] == "." or value[after.start] == "."):
            raise AddressListError("words not joined by '.' in an address")


def _lex(value: str, start: int, end: int) -> list[_Token]:
    tokens: list[_Token] = []
    i = start
    while i < end:
        char = value[i]
        if char in _WSP:
            j = i + 1
            while j < end and value[j] in _WSP:
                j += 1
            kind = "ws"
        elif char == '"':
            j, kind = _close(value, i, end, '"', "quoted string"), "quoted"
        elif char == "[":
            j, kind = _close(value, i, end, "]", "domain literal"), "literal"
        elif char == "(":
            j, kind = _close_comment(value, i, end), "comment"
        elif char == "<":
            j, kind = _close_angle(value, i, end), "angle"
        elif char in ",:;@":
            j, kind = i + 1, char
        elif char in ")>]":
            raise AddressListError(f"{char!r} without its opening bracket")
        else:
            j = i + 1
            while j < end and value[j] not in _WSP and value[j] not in _SPECIALS:
                j += 1
            kind = "atom"
        tokens.append(_Token(kind, i, j))
        i = j
    return tokens


def _close(value: str, start: int, end: int, closer: str, what: str) -> int:
    """The end of a quoted string or domain literal opened at `start` (quoted-pairs skipped)."""
    i = start + 1
    while i < end:
        if value[i] == "\\":
            i += 2
            continue
        if value[i] == closer:
            return i + 1
        i += 1
    raise AddressListError(f"unterminated {what}")


def _close_comment(value: str, start: int, end: int) -> int:
    depth, i = 0, start
    while i < end:
        char = value[i]
        if char == "\\":
            i += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise AddressListError("unterminated comment")


def _close_angle(value: str, start: int, end: int) -> int:
    # Not comment-aware: an X.500 DN inside <...> holds "(FYDIBOHF23SPDLT)" as plain text.
    i = start + 1
    while i < end:
        char = value[i]
        if char == '"':
            i = _close(value, i, end, '"', "quoted string")
            continue
        if char == "<":
            raise AddressListError("'<' inside <...>")
        if char == ">":
            return i + 1
        i += 1
    raise AddressListError("'<' without '>'")

"""Rewrite the address headers of a message as it is copied (pure: bytes in, bytes out).

A domain move changes every address, and Exchange keeps internal senders as X.500
(legacyExchangeDN) addresses; rewriting From, To, Cc, ... lets replies reach the new mailboxes.

What is promised, so the copier can rely on it:

* Only the header block is read or changed: everything before the first empty line (CRLF or
  LF).  Hence ``rewrite_message(header_block, maps).message + body`` equals
  ``rewrite_message(header_block + body, maps).message``, whether or not the header block
  carries the empty line.
* Only the fields named in `ADDRESS_HEADERS` (any case) change, and in them only the
  characters of an address a map hits: display names, encoded words (RFC 2047), UTF-8
  (RFC 6532), comments, folding and line endings stay byte for byte.  Lines are not refolded.
  (Comments and folding inside an address that changes: see below.)
* Maps apply in order, first hit wins: identities (the whole address, case-insensitive), then
  the X.500 map (a ``/O=.../CN=...`` DN, bare, in ``<...>``, with ``EX:``, or IMCEAEX-
  encapsulated), then domains (exact domain, case-insensitive; subdomains are not touched, the
  local part is kept as written).  The SMTP address an X.500 DN maps to goes through the
  identity and domain maps too, so a map exported before the move still lands on the new
  domain.
* Rewriting is idempotent as long as no map's target is another map's source.
* An address may hold comments and folding white space between the words and dots of its
  local part or domain (RFC 5322 obs-local-part and obs-domain, as in
  ``<jdoe@machine(comment).  example>``).  Where no map changes the address, they stay byte for
  byte like everything else.  Where one does, the local part and the domain are replaced apart,
  each only if it changes, so the other part and whatever surrounds the ``@`` keep their bytes.
  In a replaced part the new text takes the place of the words and dots, and the comments that
  stood between them follow it, in order and byte for byte, each with the white space just
  before it (a fold stays a fold): the example becomes ``<jdoe@contoso.com(comment)>``.  The
  other white space inside the part goes with the words it separated; no comment is dropped.
* A field that cannot be parsed is kept as it was and counted in `headers_unparsable`; so is one
  longer than `MAX_FIELD_OCTETS` or with more than `MAX_FIELD_ADDRESSES` addresses, which bounds
  what one field may cost.  The cost is linear in the length of the header block.
* With `RewriteMaps.keep_original`, each changed field is followed immediately by
  ``X-Original-<Name>:`` carrying the original value bytes.  Right after (not at the end of the
  block) so the pair stays together and so a second run can see it: no X-Original field is
  added when the next field already is ``X-Original-<Name>``.  An ``X-Original-To`` that
  Postfix put elsewhere (the envelope recipient) is therefore neither reused nor mistaken.
* The size of the message changes when an address does; `RewriteResult.message` is the copy.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from migrator.addrlist import AddressListError, AddrSpec, X500Address, find_addresses
from migrator.csvtable import decode_csv_bytes
from migrator.errors import BatchError
from migrator.names import email_address_problem

ADDRESS_HEADERS = (
    "From",
    "Sender",
    "Reply-To",
    "To",
    "Cc",
    "Bcc",
    "Resent-From",
    "Resent-Sender",
    "Resent-To",
    "Resent-Cc",
    "Disposition-Notification-To",  # RFC 8098 MDN
    "Return-Receipt-To",  # pre-standard read receipts (Outlook, Pegasus)
)
_CANONICAL = {name.lower().encode("ascii"): name.encode("ascii") for name in ADDRESS_HEADERS}

# RFC 5322 field-name, then obs-FWS before the colon; a UTF-8 BOM that a file carried in
# front of the first field does not hide it.
_FIELD_NAME = re.compile(rb"(?:\xef\xbb\xbf)?([\x21-\x39\x3b-\x7e]+)[ \t]*:")
_EMPTY_LINE = re.compile(rb"\n\r?\n")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")
_ATEXT = r"[^\x00-\x20\x7f()<>\[\]:;@\\,.\"]+"  # RFC 5322 atext, and UTF-8 (RFC 6532)
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")
_DOMAIN = re.compile(r"(?:[^\W_](?:[\w-]*[^\W_])?\.)+[^\W_](?:[\w-]*[^\W_])?")
_HEX = frozenset("0123456789abcdefABCDEF")

# What one address field (its name and line ends included) may hold; beyond either bound it
# counts as unparsable and is kept as it was.  Parsing is linear, but a broken or hostile
# message can carry a field of millions of addresses, and a worker would pay for it.  No real
# mail comes near: Postfix keeps at most 102,400 bytes of one header (header_size_limit),
# Exchange Online takes at most 1,000 recipients per message (500 unless raised).  At the
# bounds the costliest field we found (a token per octet: ",,,," or "a a a") takes about 0.4 s
# of CPU on the shared 2-core test machine, a field of 10,000 addresses 0.15 s.
MAX_FIELD_OCTETS = 256 * 1024
MAX_FIELD_ADDRESSES = 10_000


@dataclass(frozen=True)
class RewriteMaps:
    """What to rewrite.  Keys are normalised on construction (identities and domains
    lower-cased, X.500 DNs upper-cased without an ``EX:``/``X500:`` prefix), so callers may
    pass addresses as the batch CSV spells them."""

    identities: Mapping[str, str] = field(default_factory=dict)
    x500: Mapping[str, str] = field(default_factory=dict)
    domains: Mapping[str, str] = field(default_factory=dict)
    keep_original: bool = False

    def __post_init__(self) -> None:
        identities = {k.strip().lower(): v.strip() for k, v in self.identities.items()}
        x500 = {_dn_key(k): v.strip() for k, v in self.x500.items()}
        domains = {k.strip().lower(): v.strip() for k, v in self.domains.items()}
        object.__setattr__(self, "identities", identities)
        object.__setattr__(self, "x500", x500)
        object.__setattr__(self, "domains", domains)

    def is_empty(self) -> bool:
        """True when no map could hit: rewriting is off."""
        return not (self.identities or self.x500 or self.domains)


@dataclass(frozen=True)
class RewriteResult:
    """One rewritten message and what it took; the copier sums the counts per mailbox."""

    message: bytes  # the copy to store: a different length from the source when changed
    addresses_rewritten: int
    headers_unparsable: int  # address fields left as they were because they could not be parsed

    @property
    def changed(self) -> bool:
        """True when at least one address was rewritten (so `message` differs from the input)."""
        return self.addresses_rewritten > 0


def rewrite_message(raw: bytes, maps: RewriteMaps) -> RewriteResult:
    """Rewrite the address fields of `raw` with `maps`; see the module docstring."""
    if maps.is_empty():
        return RewriteResult(raw, 0, 0)
    end = header_block_end(raw)
    fields = _split_fields(raw[:end])
    out: list[bytes] = []
    rewritten = unparsable = 0
    for index, field_bytes in enumerate(fields):
        match = _FIELD_NAME.match(field_bytes)
        name = _CANONICAL.get(match.group(1).lower()) if match else None
        if match is None or name is None:
            out.append(field_bytes)
            continue
        colon = match.end()
        try:
            if len(field_bytes) > MAX_FIELD_OCTETS:
                raise AddressListError(f"longer than {MAX_FIELD_OCTETS} octets")
            value, count = _rewrite_value(field_bytes[colon:], maps)
        except AddressListError:
            unparsable += 1
            out.append(field_bytes)
            continue
        if count == 0:
            out.append(field_bytes)
            continue
        rewritten += count
        new_field = field_bytes[:colon] + value
        original = b"X-Original-" + name
        if maps.keep_original and not _is_field(fields, index + 1, original):
            if not new_field.endswith(b"\n"):  # the last line of a message without a newline
                new_field += b"\r\n" if b"\r\n" in raw[:end] else b"\n"
            out.extend((new_field, original + b":" + field_bytes[colon:]))
        else:
            out.append(new_field)
    return RewriteResult(b"".join(out) + raw[end:], rewritten, unparsable)


def header_block_end(raw: bytes) -> int:
    """The offset of the first empty line (the header/body separator), or len(raw)."""
    if raw.startswith((b"\n", b"\r\n")):
        return 0
    found = _EMPTY_LINE.search(raw)
    return found.start() + 1 if found else len(raw)


def _split_fields(block: bytes) -> list[bytes]:
    """Physical fields: a line and the continuation lines (SP or HT first) after it."""
    fields: list[list[bytes]] = []
    for line in _LINE.findall(block):
        if fields and line[:1] in (b" ", b"\t"):
            fields[-1].append(line)
        else:
            fields.append([line])
    return [b"".join(lines) for lines in fields]


def _is_field(fields: list[bytes], index: int, name: bytes) -> bool:
    if index >= len(fields):
        return False
    match = _FIELD_NAME.match(fields[index])
    return match is not None and match.group(1).lower() == name.lower()


def _rewrite_value(value: bytes, maps: RewriteMaps) -> tuple[bytes, int]:
    """The value with mapped addresses replaced, and how many were; raises AddressListError."""
    # RFC 6532 allows UTF-8; surrogateescape carries any other byte through unchanged.
    text = value.decode("utf-8", "surrogateescape")
    # Built once from its pieces: splicing each edit into the whole text cost addresses x length
    # (a field of 300,000 addresses held a worker for minutes).
    pieces: list[str] = []
    done = rewritten = 0  # text[:done] is in pieces
    for address in find_addresses(text, limit=MAX_FIELD_ADDRESSES):
        if isinstance(address, X500Address):
            edits = _x500_edits(address, maps)
        else:
            edits = _addr_spec_edits(text, address, maps)
        rewritten += bool(edits)
        for (start, end), new in edits:
            pieces += (text[done:start], new)
            done = end
    if not rewritten:
        return value, 0
    pieces.append(text[done:])
    return "".join(pieces).encode("utf-8", "surrogateescape"), rewritten


_Edit = tuple[tuple[int, int], str]  # replace text[start:end] with the string


def _x500_edits(address: X500Address, maps: RewriteMaps) -> list[_Edit]:
    smtp = maps.x500.get(_dn_key(address.dn))
    return [] if smtp is None else [(address.span, _format(_after_x500(smtp, maps)))]


def _addr_spec_edits(text: str, address: AddrSpec, maps: RewriteMaps) -> list[_Edit]:
    local = _unquote(address.local)
    for key in (f"{address.local}@{address.domain}", f"{local}@{address.domain}"):
        target = maps.identities.get(key.lower())
        if target is not None:
            return _edits(text, address, target)
    if local[:8].lower() == "imceaex-":
        smtp = maps.x500.get(_dn_key(imcea_decode(local[8:])))
        if smtp is not None:
            return _edits(text, address, _after_x500(smtp, maps))
    domain = maps.domains.get(address.domain.lower())
    if domain is None or domain == address.domain:
        return []
    return [_part_edit(text, address.domain_span, address.domain_comments, domain)]


def _edits(text: str, address: AddrSpec, target: str) -> list[_Edit]:
    """The local part and the domain are replaced apart, each only if it changes, so the other
    keeps its bytes, and so do the comments and white space around the '@'."""
    local, at, domain = target.rpartition("@")
    if not at:  # not an address: cannot be split, so it replaces the whole addr-spec
        return [(address.span, target)]
    edits = []
    if local != address.local:  # else the local part is already written as the target has it
        local = _format(target).rpartition("@")[0]
        if local != address.local:
            edits.append(_part_edit(text, address.local_span, address.local_comments, local))
    if domain != address.domain:
        edits.append(_part_edit(text, address.domain_span, address.domain_comments, domain))
    return edits


def _part_edit(
    text: str, span: tuple[int, int], comments: tuple[tuple[int, int], ...], new: str
) -> _Edit:
    """The words and dots of a local part or domain become `new`; the comments between them
    follow it in order, each with the white space just before it (see the module docstring)."""
    kept = []
    for start, end in comments:
        while text[start - 1] in " \t\r\n":  # stops at the part's first word at the latest
            start -= 1
        kept.append(text[start:end])
    return span, new + "".join(kept)


def _after_x500(smtp: str, maps: RewriteMaps) -> str:
    """The identity and domain maps applied to the SMTP address an X.500 DN resolved to."""
    target = maps.identities.get(smtp.lower())
    if target is not None:
        return target
    local, _, domain = smtp.rpartition("@")
    new_domain = maps.domains.get(domain.lower())
    return smtp if new_domain is None else f"{local}@{new_domain}"


def _format(address: str) -> str:
    """An address as an addr-spec: the local part quoted if it is not a dot-atom."""
    local, at, domain = address.rpartition("@")
    if not at or _DOT_ATOM.fullmatch(local) or local.startswith('"'):
        return address
    quoted = local.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}"@{domain}'


def _unquote(local: str) -> str:
    """A local part that is one quoted string, without its quotes and quoted-pairs."""
    if len(local) < 2 or not (local.startswith('"') and local.endswith('"')):
        return local
    return re.sub(r"\\(.)", r"\1", local[1:-1], flags=re.DOTALL)


def imcea_decode(encoded: str) -> str:
    """The address inside an IMCEA encapsulation (the part after ``IMCEAEX-``).

    Microsoft's IMCEA encoding (MS-OXCMAIL 2.1.3.1.3): ``_`` stands for ``/`` and ``+XX`` is
    the byte with hex value XX (``+20`` space, ``+2E`` ``.``, ``+5F`` ``_``); anything else is
    itself.  A ``+`` not followed by two hex digits is kept as it is.
    """
    out = bytearray()
    i = 0
    while i < len(encoded):
        char = encoded[i]
        if char == "_":
            out += b"/"
        elif char == "+" and len(encoded) > i + 2 and _HEX.issuperset(encoded[i + 1 : i + 3]):
            out.append(int(encoded[i + 1 : i + 3], 16))
            i += 3
            continue
        else:
            out += char.encode("utf-8", "surrogateescape")
        i += 1
    return out.decode("utf-8", "surrogateescape")


def _dn_key(dn: str) -> str:
    dn = dn.strip()
    for prefix in ("EX:", "X500:"):
        if dn.upper().startswith(prefix):
            dn = dn[len(prefix) :]
    return dn.upper()


def load_x500_map(path: str | Path) -> dict[str, str]:
    """Read a ``LegacyExchangeDN,PrimarySmtpAddress`` CSV into {upper-cased DN: SMTP address}.

    UTF-8 with or without a BOM; a header row names the two columns (any order, other columns
    ignored), or, without one, the DN comes first and the address second.  A ``#TYPE`` line
    (Windows PowerShell's Export-Csv) and blank lines are skipped; ``X500:``/``EX:`` prefixes
    are dropped.  Raises BatchError naming the file and the line of the first problem.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise BatchError(f"{path}: cannot be read: {exc.strerror}") from exc
    reader = csv.reader(io.StringIO(decode_csv_bytes(data, what=str(path)), newline=""))
    columns: list[int] | None = None
    found: dict[str, str] = {}
    for line, row in ((reader.line_num, row) for row in reader):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (line == 1 and cells[0].upper().startswith("#TYPE")):
            continue
        where = f"{path}: line {line}"
        if columns is None:
            columns = [0, 1]
            if not _dn_key(cells[0]).startswith("/"):
                columns = _x500_columns(cells, where)
                continue
        dn, smtp = (cells[i] if i < len(cells) else "" for i in columns)
        key = _dn_key(dn)
        if not key.startswith("/"):
            raise BatchError(f"{where}: LegacyExchangeDN {dn!r} does not start with '/'")
        problem = email_address_problem(smtp)
        if problem:
            raise BatchError(f"{where}: PrimarySmtpAddress {smtp!r}: {problem}")
        if found.get(key, smtp).lower() != smtp.lower():
            raise BatchError(f"{where}: {dn} is mapped twice, to {found[key]} and {smtp}")
        found[key] = smtp
    if columns is None:
        raise BatchError(f"{path}: the file has no rows")
    return found


def _x500_columns(header: list[str], where: str) -> list[int]:
    names = [cell.lower() for cell in header]
    for name in ("LegacyExchangeDN", "PrimarySmtpAddress"):
        if name.lower() not in names:
            raise BatchError(f"{where}: the header has no column {name}")
    return [names.index("legacyexchangedn"), names.index("primarysmtpaddress")]


def parse_domain_pair(text: str) -> tuple[str, str]:
    """``"adatum.com=contoso.com"`` -> ("adatum.com", "contoso.com"), lower-cased.

    Raises ValueError saying what is wrong.
    """
    parts = [part.strip().lower() for part in text.split("=")]
    if len(parts) != 2:
        raise ValueError(f"{text!r}: give one pair as OLD=NEW, for example adatum.com=contoso.com")
    for part in parts:
        if not part:
            raise ValueError(f"{text!r}: a domain is missing on one side of '='")
        if not _DOMAIN.fullmatch(part):
            raise ValueError(f"{text!r}: {part!r} is not a domain name like contoso.com")
    if parts[0] == parts[1]:
        raise ValueError(f"{text!r}: the domain maps to itself")
    return parts[0], parts[1]

"""What changed in a selected source folder since a pass read it: RFC 7162 CONDSTORE
(CHANGEDSINCE: the flags of the messages changed since a mod-sequence) and QRESYNC
(VANISHED: the UIDs expunged since), or, on a server without them, every message's flags
and UID (the caller compares with what it recorded).  Messages above the old UIDNEXT are
listed by the source itself, as a full listing lists them."""

from __future__ import annotations

from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_fetch_response, parse_response

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.connection import as_text, imap_errors
from migrator.connectors.imap.uidsets import vanished_uids
from migrator.errors import PermanentError
from migrator.plan import MessageRef
from migrator.syncstate import FolderChanges, FolderState

# Flags that describe the session or the server's housekeeping, not the message.
_DROPPED_FLAGS = {"\\recent", "\\deleted"}


def enable_modseqs(client: IMAPClient, what: str) -> str | None:
    """RFC 5161 ENABLE QRESYNC (which enables CONDSTORE too), else CONDSTORE, where the
    server offers them; which one is on (None: neither)."""
    for extension in ("QRESYNC", "CONDSTORE"):
        if client.has_capability(extension):
            try:
                with imap_errors(what):
                    enabled = {as_text(e).upper() for e in client.enable(extension)}
            except PermanentError:
                continue  # refused: incremental passes do without it
            if extension in enabled:
                return extension
    return None


def all_states(client: IMAPClient, what: str) -> dict[str, FolderState]:
    """Every folder's state in one command (RFC 5819 LIST-STATUS, with HIGHESTMODSEQ), where
    the server has it and mod-sequences are on; else nothing (each folder is selected)."""
    return {
        folder: FolderState(values[b"UIDVALIDITY"], values[b"UIDNEXT"], values[b"HIGHESTMODSEQ"])
        for folder, values in listed_statuses(
            client, what, (b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ")
        ).items()
    }


def listed_statuses(
    client: IMAPClient, what: str, items: tuple[bytes, ...]
) -> dict[str, dict[bytes, int]]:
    """`items` of every folder in one command (RFC 5819 LIST-STATUS), where the server has
    it; the folders whose answer lacks one of them left out (nothing: no LIST-STATUS)."""
    if not client.has_capability("LIST-STATUS"):
        return {}
    with imap_errors(what):
        typ, raw = imapwire.list_status(client, " ".join(i.decode() for i in items))
    if typ != "OK":
        return {}
    try:
        parsed = parse_response([element for element in raw if element])
    except (IMAPClientError, ValueError):
        return {}
    statuses: dict[str, dict[bytes, int]] = {}
    for name, answer in zip(parsed[::2], parsed[1::2], strict=False):
        values = (
            dict(zip(answer[::2], answer[1::2], strict=False)) if isinstance(answer, tuple) else {}
        )
        if not set(items) <= set(values):
            continue
        folder = decode_utf7(name) if isinstance(name, bytes) else str(name)
        statuses[folder] = {item: int(values[item]) for item in items}
    return statuses


def folder_state(info: dict[bytes, Any]) -> FolderState:
    """The state a SELECT answer gives: UIDVALIDITY, UIDNEXT and, with CONDSTORE,
    HIGHESTMODSEQ (a server that says NOMODSEQ keeps none)."""
    modseq = info.get(b"HIGHESTMODSEQ")
    return FolderState(
        uidvalidity=int(info.get(b"UIDVALIDITY", 0)),
        uidnext=int(info.get(b"UIDNEXT", 0)),
        modseq=int(modseq) if modseq is not None and b"NOMODSEQ" not in info else None,
    )


def older_changes(
    client: IMAPClient,
    state: FolderState,
    since: FolderState,
    new: list[MessageRef],
    *,
    qresync: bool,
) -> FolderChanges:
    """The changes among the messages below `since.uidnext` in the selected folder, with
    `new` (those above it, listed)."""
    if since.uidnext <= 1:
        return FolderChanges(state, new, present=frozenset())
    older = f"1:{since.uidnext - 1}"
    if since.modseq is not None and state.modseq is not None:
        if state.modseq == since.modseq:
            return FolderChanges(state, new)  # no flag changed, nothing expunged
        typ, data, vanished = imapwire.uid_fetch_changed(
            client, older, "(UID FLAGS)", since.modseq, vanished=qresync
        )
        _check(typ, data)
        flags = read_flags(data)
        if qresync:
            gone = vanished_uids(vanished, below=since.uidnext)
            return FolderChanges(state, new, flags, vanished=frozenset(map(str, gone)))
        present = frozenset(str(uid) for uid in client.search(["UID", older]))
        return FolderChanges(state, new, flags, present=present)
    typ, data = imapwire.uid_fetch(client, older, "(UID FLAGS)")
    _check(typ, data)
    flags = read_flags(data)
    return FolderChanges(state, new, flags, all_flags=True, present=frozenset(flags))


def _check(typ: str, data: Any) -> None:
    if typ != "OK":
        raise IMAPClientError(f"fetch failed: {as_text(data[0] if data else '')}")


def read_flags(data: Any) -> dict[str, tuple[str, ...]]:
    parsed = parse_fetch_response(list(data), normalise_times=False, uid_is_key=True)
    return {
        str(uid): tuple(
            f
            for f in (as_text(flag) for flag in d.get(b"FLAGS", ()))
            if f.lower() not in _DROPPED_FLAGS
        )
        for uid, d in parsed.items()
        if b"FLAGS" in d
    }

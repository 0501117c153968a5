"""What changed in a selected source folder since a pass read it: RFC 7162 CONDSTORE
(CHANGEDSINCE: the flags of the messages changed since a mod-sequence) and QRESYNC
(VANISHED: the UIDs expunged since), or, on a server without them, every message's flags
and UID (the caller compares with what it recorded).  Messages above the old UIDNEXT are
listed by the source itself, as a full listing lists them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imap_utf7 import decode as decode_utf7
from imapclient.response_parser import parse_fetch_response, parse_response

from migrator.connectors.imap import wire as imapwire
from migrator.connectors.imap.connection import as_text, imap_errors, read_listing
from migrator.connectors.imap.listing import FIELDS_ITEM, LISTING_ITEMS, Listed, parse_flags
from migrator.connectors.imap.uidsets import vanished_uids
from migrator.errors import FolderRefused, PermanentError
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


# A folder's state as LIST-STATUS gives it (RFC 5819; HIGHESTMODSEQ: RFC 7162).
STATE_ITEMS = (b"UIDVALIDITY", b"UIDNEXT", b"HIGHESTMODSEQ")


def all_states(client: IMAPClient, what: str) -> dict[str, FolderState]:
    """Every folder's state in one command (RFC 5819 LIST-STATUS, with HIGHESTMODSEQ), where
    the server has it and mod-sequences are on; else nothing (each folder is selected)."""
    return _states(listed_statuses(client, what, STATE_ITEMS))


def list_with_states(client: IMAPClient, what: str) -> tuple[list[Any], dict[str, FolderState]]:
    """The folder list, as imapclient's list_folders gives it, and every folder's state
    (all_states), their LIST and LIST-STATUS written together: one round trip for the two.
    For a server with LIST-STATUS."""
    with imap_errors(what):
        listed, statused = imapwire.pipelined(
            client,
            [
                ("LIST", b'LIST "" "*"'),
                ("LIST", b'LIST "" "*" RETURN (STATUS (' + b" ".join(STATE_ITEMS) + b"))"),
            ],
        )
        if listed.typ != "OK":  # worded as imapclient's list_folders() words it
            raise IMAPClientError(f"list failed: {listed.text}")
        folders = imapwire.folder_list(client, listed.untagged.get("LIST", []))
    raw = statused.untagged.get("STATUS", []) if statused.typ == "OK" else []
    return folders, _states(parsed_statuses(raw, STATE_ITEMS))


def _states(statuses: dict[str, dict[bytes, int]]) -> dict[str, FolderState]:
    return {
        folder: FolderState(values[b"UIDVALIDITY"], values[b"UIDNEXT"], values[b"HIGHESTMODSEQ"])
        for folder, values in statuses.items()
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
    return parsed_statuses(raw, items)


def parsed_statuses(
    raw: list[bytes | tuple[bytes, bytes]], items: tuple[bytes, ...]
) -> dict[str, dict[bytes, int]]:
    """LIST-STATUS's STATUS answers as imaplib keeps them, read: `items` of each folder (the
    folders whose answer lacks one of them left out; nothing where they cannot be read)."""
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
    """A `(UID FLAGS)` FETCH's flags by UID (as text), those of no interest dropped."""
    usual = parse_flags(data)
    if usual is not None:
        return {
            str(uid): tuple(f for f in flags if f.lower() not in _DROPPED_FLAGS)
            for uid, flags in usual.items()
        }
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


# -- every folder that moved at once ----------------------------------------------------

# Folders whose commands go in one write (three or four commands each).
TOGETHER = 32


@dataclass(frozen=True)
class Together:
    """One folder's changes as changes_together read them: `changes` without the new
    messages (None: its UIDVALIDITY changed, list it whole), `listed` those above its old
    UIDNEXT for the caller to make refs of; `alone`: it keeps no mod-sequences now, so
    it is read alone (ImapSource.changes)."""

    changes: FolderChanges | None
    listed: dict[int, Listed] = field(default_factory=dict)
    alone: bool = False


def changes_together(
    client: IMAPClient, asked: Sequence[tuple[str, FolderState]], *, qresync: bool, what: str
) -> list[Together]:
    """older_changes (and the new messages' listing) of each (folder, since), TOGETHER
    folders at a time in two round trips: every folder's EXAMINE and flag FETCH (and UID
    SEARCH) written before any answer is read, then the same for the new messages of the
    folders that have some.  A server may run one folder's commands side by side and
    interleave their untagged answers (RFC 3501 section 5.5; Dovecot does), never across
    an EXAMINE: so one folder's answers are read as one pool, and the listing is not
    asked beside the flags.  A folder the server refuses to EXAMINE raises FolderRefused,
    as a SELECT of it does."""
    found: list[Together] = []
    for start in range(0, len(asked), TOGETHER):
        group = asked[start : start + TOGETHER]
        olders = [_older_commands(name, since, qresync=qresync) for name, since in group]
        read = [
            _older(client, since, answers, qresync, f"{what}, folder {name!r}")
            for (name, since), answers in zip(group, _run(client, group, olders, what), strict=True)
        ]
        newer = [
            (i, (name, since))
            for i, ((name, since), got) in enumerate(zip(group, read, strict=True))
            if got.changes is not None and got.changes.state.uidnext > since.uidnext
        ]
        listing = LISTING_ITEMS.encode()
        news = [
            [("FETCH", b"UID FETCH %d:* %s" % (max(s.uidnext, 1), listing))] for _, (_, s) in newer
        ]
        answered = _run(client, [pair for _, pair in newer], news, what)
        for (i, (name, since)), answers in zip(newer, answered, strict=True):
            read[i] = _with_new(client, read[i], since, answers, f"{what}, folder {name!r}")
        found += read
    return found


def _run(
    client: IMAPClient,
    group: Sequence[tuple[str, FolderState]],
    commands: Sequence[list[tuple[str, bytes]]],
    what: str,
) -> list[list[imapwire.Answered]]:
    """Each folder's EXAMINE and `commands`, all written at once; each folder's answers."""
    written: list[tuple[str, bytes]] = []
    for (name, _), mine in zip(group, commands, strict=True):
        written += [("EXAMINE", b"EXAMINE " + imapwire.folder_arg(client, name)), *mine]
    if not written:
        return []
    with imap_errors(what):
        answers = imapwire.pipelined(client, written)
    apart: list[list[imapwire.Answered]] = []
    at = 0
    for mine in commands:
        apart.append(answers[at : at + 1 + len(mine)])
        at += 1 + len(mine)
    return apart


def _older_commands(name: str, since: FolderState, *, qresync: bool) -> list[tuple[str, bytes]]:
    """After the EXAMINE: the flags of the messages below the old UIDNEXT (CHANGEDSINCE,
    with VANISHED under QRESYNC, else a UID SEARCH of those still there; without a
    mod-sequence every older message's flags)."""
    if since.uidnext <= 1:
        return []
    older = b"1:%d" % (since.uidnext - 1)
    if since.modseq is None:
        return [("FETCH", b"UID FETCH " + older + b" (UID FLAGS)")]
    changed = b" (UID FLAGS) (CHANGEDSINCE %d%s)" % (since.modseq, b" VANISHED" * qresync)
    commands = [("FETCH", b"UID FETCH " + older + changed)]
    if not qresync:
        commands.append(("SEARCH", b"UID SEARCH UID " + older))
    return commands


def _pooled(answers: Sequence[imapwire.Answered], what: str) -> dict[str, list[Any]]:
    """The untagged answers of one folder's commands after its EXAMINE, as one pool."""
    pool: dict[str, list[Any]] = {}
    for answer in answers:
        if answer.typ != "OK":
            raise PermanentError(f"{what}: {answer.typ} {answer.text}")
        for name, values in answer.untagged.items():
            pool.setdefault(name, []).extend(values)
    return pool


def _examined(client: IMAPClient, answer: imapwire.Answered, what: str) -> FolderState:
    if answer.typ != "OK":
        raise FolderRefused(f"{what}: EXAMINE refused: {answer.text}")
    return folder_state(imapwire.select_info(client, answer))


def _older(
    client: IMAPClient,
    since: FolderState,
    answers: Sequence[imapwire.Answered],
    qresync: bool,
    what: str,
) -> Together:
    """older_changes, from the answers to _older_commands (without the new messages)."""
    state = _examined(client, answers[0], what)
    if state.uidvalidity != since.uidvalidity:
        return Together(None)
    if since.modseq is not None and state.modseq is None:
        return Together(None, alone=True)
    pool = _pooled(answers[1:], what)
    if since.uidnext <= 1:
        return Together(FolderChanges(state, present=frozenset()))
    flags = read_flags(pool.get("FETCH", []))
    if since.modseq is None or state.modseq is None:
        return Together(FolderChanges(state, flags=flags, all_flags=True, present=frozenset(flags)))
    if state.modseq == since.modseq:
        return Together(FolderChanges(state))  # no flag changed, nothing expunged
    if qresync:
        vanished = [bytes(v) for v in pool.get("VANISHED", []) if v]
        gone = frozenset(map(str, vanished_uids(vanished, below=since.uidnext)))
        return Together(FolderChanges(state, flags=flags, vanished=gone))
    lines = pool.get("SEARCH", [])
    present = frozenset(uid for line in lines if line for uid in as_text(line).split())
    return Together(FolderChanges(state, flags=flags, present=present))


def _with_new(
    client: IMAPClient,
    got: Together,
    since: FolderState,
    answers: Sequence[imapwire.Answered],
    what: str,
) -> Together:
    """`got` with the messages above the old UIDNEXT listed (the last one comes too where
    there are none: only those above it are kept).  A folder made again between the two
    round trips (another UIDVALIDITY) is listed whole."""
    assert got.changes is not None
    if _examined(client, answers[0], what).uidvalidity != got.changes.state.uidvalidity:
        return Together(None)
    fetched = read_listing(_pooled(answers[1:], what).get("FETCH", []), FIELDS_ITEM)
    listed = {uid: m for uid, m in fetched.items() if uid >= since.uidnext}
    return replace(got, listed=listed)

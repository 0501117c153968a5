"""The ledger of one mailbox's passes, kept beside its checkpoints (RedisProgress takes it
from LedgerMixin): where each copy went at the target (`lg:`), each source folder's
state as the last pass read it (`fs:`), and each target folder's mark (`tm:`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace

import redis

from migrator.errors import LockLost
from migrator.state.keys import _fields
from migrator.state.locks import _FENCE, Lease, _lock_args, _lock_keys
from migrator.syncstate import FolderState, LedgerEntry, Member

# Members handed to one script call, at most.
_CHUNK = 1000


class LedgerMixin:
    """syncstate.Ledger in Redis, for the RedisProgress of one mailbox."""

    _r: redis.Redis
    _lease: Lease | None
    _lost: threading.Event | None
    _ckpt: str
    _legacy: str | None
    _ledger: str
    _folders: str
    _marks: str

    def folder_states(self) -> dict[str, FolderState]:
        found: dict[str, FolderState] = {}
        for name, text in self._r.hgetall(self._folders).items():
            state = FolderState.from_text(str(text))
            if state is not None:
                found[str(name)] = state
        return found

    def save_folder_states(self, states: Mapping[str, FolderState]) -> None:
        if states:
            self._r.hset(
                self._folders, mapping=_fields({n: s.to_text() for n, s in states.items()})
            )

    def entries(self, folder: str | None) -> dict[Member, LedgerEntry]:
        match = f"*:{_glob(folder)}" if folder is not None else None
        return {ident: entry for ident, entry in self._scan(match) if folder in (None, ident[0])}

    def each_entry(self) -> Iterator[tuple[Member, LedgerEntry]]:
        return self._scan(None)

    def _scan(self, match: str | None) -> Iterator[tuple[Member, LedgerEntry]]:
        for member, text in self._r.hscan_iter(self._ledger, match=match, count=5000):
            ident = _parse(str(member))
            entry = LedgerEntry.from_text(str(text))
            if ident is not None and entry is not None:
                yield ident, entry

    def sources_of(self, target_folder: str) -> set[str]:
        found: set[str] = set()
        for member, text in self._r.hscan_iter(self._ledger, count=5000):
            ident, entry = _parse(str(member)), LedgerEntry.from_text(str(text))
            if ident is not None and entry is not None and entry.placement.folder == target_folder:
                found.add(ident[0])
        return found

    def entries_of(self, members: Sequence[Member]) -> dict[Member, LedgerEntry]:
        if not members:
            return {}
        found: dict[Member, LedgerEntry] = {}
        texts = self._r.hmget(self._ledger, [_member(m) for m in members])
        for member, text in zip(members, texts, strict=True):
            entry = LedgerEntry.from_text(str(text)) if text is not None else None
            if entry is not None:
                found[member] = entry
        return found

    def checkpoints_of(self, members: Sequence[Member]) -> dict[Member, str | None]:
        if not members:
            return {}
        found: dict[Member, str | None] = {}
        keys = self._r.hmget(self._ckpt, [_member(m) for m in members])
        for member, key in zip(members, keys, strict=True):
            if key is not None:
                found[member] = str(key) or None
        if self._legacy is not None:
            rest = [m for m in members if m not in found]
            if rest:
                held = self._r.smismember(self._legacy, [_member(m) for m in rest])
                found.update((m, None) for m, h in zip(rest, held, strict=True) if h)
        return found

    def update(self, changed: Sequence[tuple[Member, LedgerEntry]]) -> None:
        self._fenced_write([(_member(m), _member(m), e.to_text()) for m, e in changed], _UPDATE)

    def forget(self, members: Sequence[Member]) -> None:
        self._fenced_write([(_member(m), "", "") for m in members], _FORGET)

    def rename_folder(self, old: str, new: str, target_folder: str | None) -> int:
        moves: list[tuple[str, str, str]] = []
        for member, _ in self._r.hscan_iter(self._ckpt, match=f"*:{_glob(old)}", count=5000):
            ident = _parse(str(member))
            if ident is None or ident[0] != old:
                continue
            moves.append((str(member), _member((new, ident[1], ident[2])), ""))
        entries = self.entries(old)
        if target_folder is not None:
            moves = [
                (m, n, _moved(entries.get(_parse_strict(m)), target_folder)) for m, n, _ in moves
            ]
        self._fenced_write(moves, _RENAME)
        # The folder's state follows, its mod-sequence dropped (a rename may restart them):
        # a pass that fails after this finds the folder under its new name next time.
        state = FolderState.from_text(str(self._r.hget(self._folders, old) or ""))
        if state is not None:
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._folders, new, replace(state, modseq=None).to_text())
            pipe.hdel(self._folders, old)
            pipe.execute()
        return len(moves)

    def target_marks(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self._r.hgetall(self._marks).items()}

    def save_target_marks(self, marks: Mapping[str, str]) -> None:
        if marks:
            self._r.hset(self._marks, mapping=_fields(dict(marks)))

    def _fenced_write(self, triples: Sequence[tuple[str, str, str]], script: str) -> None:
        """Run `script` over (member, new member, entry) triples, fenced by the lease."""
        if self._lost is not None and self._lost.is_set():
            raise LockLost("another worker took this mailbox over; stopping here")
        run = self._r.register_script(script)
        lease = self._lease
        keys = [*(_lock_keys(lease) if lease else []), self._ckpt, self._ledger]
        for start in range(0, len(triples), _CHUNK):
            args = [*(_lock_args(lease) if lease else ["", "0", "0"])]
            args += [part for triple in triples[start : start + _CHUNK] for part in triple]
            if not run(keys=keys, args=args):
                raise LockLost("another worker holds this mailbox now; nothing recorded")


def _moved(entry: LedgerEntry | None, target_folder: str) -> str:
    if entry is None:
        return ""
    return replace(entry, placement=replace(entry.placement, folder=target_folder)).to_text()


def _member(ident: Member) -> str:
    folder, uidvalidity, uid = ident
    uid = uid.replace("%", "%25").replace(":", "%3A")
    return f"{uidvalidity}:{uid}:{folder}"


def _parse(member: str) -> Member | None:
    try:
        return _parse_strict(member)
    except ValueError:
        return None


def _parse_strict(member: str) -> Member:
    uidvalidity, uid, folder = member.split(":", 2)
    return (folder, int(uidvalidity), uid.replace("%3A", ":").replace("%25", "%"))


def _glob(text: str) -> str:
    """`text` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# KEYS: the locks, then ck, lg.  ARGV: lock args, then (member, new member, entry) triples.
_HEAD = (
    _FENCE
    + """
if not fenced() then return 0 end
local k = 2 * n
local a = 3 + n
for i = a + 1, #ARGV, 3 do
"""
)
_UPDATE = _HEAD + "  redis.call('hset', KEYS[k + 2], ARGV[i], ARGV[i + 2])\nend\nreturn 1\n"
_FORGET = (
    _HEAD
    + """  redis.call('hdel', KEYS[k + 1], ARGV[i])
  redis.call('hdel', KEYS[k + 2], ARGV[i])
end
return 1
"""
)
_RENAME = (
    _HEAD
    + """  local key = redis.call('hget', KEYS[k + 1], ARGV[i])
  if key then
    redis.call('hset', KEYS[k + 1], ARGV[i + 1], key)
    redis.call('hdel', KEYS[k + 1], ARGV[i])
  end
  local entry = ARGV[i + 2]
  if entry == '' then entry = redis.call('hget', KEYS[k + 2], ARGV[i]) end
  if entry then
    redis.call('hset', KEYS[k + 2], ARGV[i + 1], entry)
    redis.call('hdel', KEYS[k + 2], ARGV[i])
  end
end
return 1
"""
)

"""RedisProgress: the copier's Progress of one mailbox, its checkpoints and counts
written together in one fenced script."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import redis

from migrator.errors import LockLost
from migrator.plan import MessageRef
from migrator.sending import Checkpoint
from migrator.state.keys import _fields, _k
from migrator.state.ledger import LedgerMixin
from migrator.state.locks import _FENCE, _RENEW, Lease, _lock_args, _lock_keys


class RedisProgress(LedgerMixin):
    """The copier's Progress, kept in Redis: each batch of stored messages is
    checkpointed and counted in one script, so a crash never leaves one without the
    other, and only while this worker holds the mailbox (the fence)."""

    def __init__(
        self,
        client: redis.Redis,
        batch_id: str,
        job_id: str,
        mailbox_key: str,
        lease: Lease | None = None,
        lost: threading.Event | None = None,
        legacy_key: str | None = None,
    ) -> None:
        self._r = client
        self._lease = lease
        self._lost = lost
        self._mbx = _k("mbx", batch_id, job_id)
        self._ckpt = _k("ck", mailbox_key)
        self._ledger = _k("lg", mailbox_key)
        self._folders = _k("fs", mailbox_key)
        self._marks = _k("tm", mailbox_key)
        self._legacy = _k("ckpt", legacy_key) if legacy_key else None
        self._tp = _k("tp", batch_id)
        self._folder: str | None = None
        self._copied = client.register_script(_COPIED)
        self._renew = client.register_script(_RENEW)

    def checkpoints(self) -> dict[Checkpoint, str | None]:
        result: dict[Checkpoint, str | None] = {}
        if self._legacy is not None:
            for member in self._r.sscan_iter(self._legacy, count=5000):
                result[_checkpoint(str(member))] = None
        for member, key in self._r.hscan_iter(self._ckpt, count=5000):
            result[_checkpoint(str(member))] = str(key) or None
        return result

    def planned(
        self, *, total_messages: int, total_bytes: int, done_messages: int, done_bytes: int
    ) -> None:
        self._r.hset(
            self._mbx,
            mapping=_fields(
                {
                    "total_messages": str(total_messages),
                    "total_bytes": str(total_bytes),
                    "done_messages": str(done_messages),
                    "done_bytes": str(done_bytes),
                    "updated": str(time.time()),
                }
            ),
        )

    def folder(self, name: str) -> None:
        # Newest first, the folder changes at nearly every message: the name rides with
        # the next checkpoint rather than costing a Redis round trip of its own.
        self._folder = name

    def fence(self) -> None:
        if self._lost is not None and self._lost.is_set():
            raise LockLost("another worker took this mailbox over; stopping here")
        if self._lease is not None and not self._renew(
            keys=_lock_keys(self._lease), args=_lock_args(self._lease)
        ):
            raise LockLost("another worker holds this mailbox now; stopping here")

    def copied(
        self, copies: Sequence[tuple[MessageRef, str | None]], placed: Sequence[str] = ()
    ) -> None:
        if self._lost is not None and self._lost.is_set():
            raise LockLost("another worker took this mailbox over; stopping here")
        if not copies:
            return
        now = time.time()
        minute = str(int(now // 60 * 60))
        self._write(
            copies,
            [
                str(len(copies)),
                str(sum(r.size for r, _ in copies)),
                str(now),
                minute,
                self._folder or "",
            ],
            placed,
        )

    def recognised(
        self, copies: Sequence[tuple[MessageRef, str | None]], placed: Sequence[str] = ()
    ) -> None:
        for start in range(0, len(copies), 1000):
            self._write(
                copies[start : start + 1000], ["0", "0", "", "", ""], placed[start : start + 1000]
            )

    def _write(
        self,
        copies: Sequence[tuple[MessageRef, str | None]],
        counts: list[str],
        placed: Sequence[str] = (),
    ) -> None:
        """Checkpoint `copies` and add `counts` (messages, bytes, time, minute, folder;
        no counting where messages is 0), and each copy's ledger entry (`placed`, where
        not ""), fenced by the lease in the same script."""
        lease = self._lease
        entries = [*placed, *[""] * (len(copies) - len(placed))]
        pairs = [
            part
            for (ref, key), entry in zip(copies, entries, strict=True)
            for part in (_member(ref), key or "", entry)
        ]
        keys = [
            *(_lock_keys(lease) if lease else []),
            self._ckpt,
            self._mbx,
            self._tp,
            self._ledger,
        ]
        args = [*(_lock_args(lease) if lease else ["", "0", "0"]), *counts, *pairs]
        if not self._copied(keys=keys, args=args):
            raise LockLost("another worker holds this mailbox now; nothing recorded")


def _member(ref: MessageRef) -> str:
    """`uidvalidity:uid:folder`, the id's own colons escaped (an IMAP UID has none, so
    the checkpoints of earlier versions read the same)."""
    uid = ref.uid.replace("%", "%25").replace(":", "%3A")
    return f"{ref.uidvalidity}:{uid}:{ref.folder}"


def _checkpoint(member: str) -> Checkpoint:
    uidvalidity, uid, folder = member.split(":", 2)
    return (folder, int(uidvalidity), uid.replace("%3A", ":").replace("%25", "%"))


# Checkpoints and counts of one batch, fenced (nothing is written unless fenced()).
# Own KEYS: ck, mbx, tp, lg.  Own ARGV: messages, bytes, time, minute, folder, then
# member/key/ledger-entry triples (no ledger entry where it is "").
_COPIED = (
    _FENCE
    + """
if not fenced() then return 0 end
local k = 2 * n
local a = 3 + n
for i = a + 6, #ARGV, 3 do
  redis.call('hset', KEYS[k + 1], ARGV[i], ARGV[i + 1])
  if ARGV[i + 2] ~= '' then redis.call('hset', KEYS[k + 4], ARGV[i], ARGV[i + 2]) end
end
local messages = tonumber(ARGV[a + 1])
if messages > 0 then
  redis.call('hincrby', KEYS[k + 2], 'done_messages', messages)
  redis.call('hincrby', KEYS[k + 2], 'done_bytes', ARGV[a + 2])
  redis.call('hincrby', KEYS[k + 2], 'copied_messages', messages)
  redis.call('hincrby', KEYS[k + 2], 'copied_bytes', ARGV[a + 2])
  redis.call('hset', KEYS[k + 2], 'updated', ARGV[a + 3])
  if ARGV[a + 5] ~= '' then redis.call('hset', KEYS[k + 2], 'current_folder', ARGV[a + 5]) end
  redis.call('hincrby', KEYS[k + 3], ARGV[a + 4] .. ':m', messages)
  redis.call('hincrby', KEYS[k + 3], ARGV[a + 4] .. ':b', ARGV[a + 2])
end
return 1
"""
)

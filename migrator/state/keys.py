"""Every Redis key migrator uses, and how hash fields are written and read.

Keys (all under "migrator:"):

    batch:{bid}              hash   created, options (JSON, no secrets; a notification
                                    webhook sealed), job count; "ended" once its end was told
    batch:{bid}:jobs         list   job ids in CSV order
    job:{bid}:{jid}          string job payload JSON (secrets only as sealed tokens)
    mbx:{bid}:{jid}          hash   state, identity, counters, folder, times, last error;
                                    heartbeat (Redis time) and locks (JSON names) while running;
                                    last_sync, pass_request (the pass it is queued for) and
                                    mailbox_messages/bytes (its totals across passes)
    ev:{bid}:{jid}           list   the mailbox's event log, JSON events oldest first, the
                                    newest EVENTS_MAX kept (state/events.py)
    tp:{bid}                 hash   "{minute}:m" / "{minute}:b" -> messages / bytes copied
    ck:{mailbox_key}         hash   "{uidvalidity}:{uid}:{folder}" of every message copied ->
                                    the content key of its copy (migrator.recognition)
    lg:{mailbox_key}         hash   the ledger: the same members -> where the copy is at the
                                    target, the source flags it has, ours or found there
                                    (syncstate.LedgerEntry; written with the checkpoint)
    fs:{mailbox_key}         hash   source folder -> its UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ as
                                    the last pass that ended done read it (syncstate)
    tm:{mailbox_key}         hash   target folder -> its mark (IMAP "uidvalidity:uidnext")
                                    after that pass: the next indexes only what came after
    ps:{bid}:{jid}           list   one JSON record per pass: kind, time, what it moved
    ckpt:{legacy_key}        set    checkpoints of earlier versions (read, never written)
    lock:{name}              string owner of a target mailbox while a pass runs (with TTL);
                                    one per name of it (mailboxid.lock_names)
    epoch:{name}             int    how many times that lock was taken: a worker whose lock
                                    vanished takes it again only if nobody took it meanwhile
    held:{name}              string its holder, kept until let go (no TTL): a new holder that
                                    finds another's there knows it died with its lock
    conn:{server}            zset   owner -> lease expiry; its size is capped per server
    up:{name}                zset   "{id}:{bytes}" of each upload to a mailbox -> when sent
                                    (Graph's budget per mailbox; entries leave after the window)
    up:{name}:total          int    the bytes of those entries
    beats                    zset   "{bid}:{jid}" of each running mailbox -> its last heartbeat
    fwd:{forward_key}        hash   forwarding of one source mailbox: state, method, target,
                                    detail, request (the command that last wrote it), time
    cap:{direction}:{mailbox} zset  bytes read from (download) or written to (upload) a
                                    mailbox with a daily cap (Gmail's): "{token}:{bytes}" ->
                                    when; members past the window dropped (state/dailycaps.py)
    capblock:{direction}:{mailbox} string until when a server's cut-off counts as the cap
                                    reached (expires then)
    capstrike:{direction}:{mailbox} string when a connection to it was last lost; a second
                                    loss before it expires (10 min) is the cut-off
    token:{digest}           string an OAuth token shared by worker processes: sealed, with
                                    its times (JSON), kept until it expires (state/tokens.py)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFIX = "migrator:"


def _k(*parts: str) -> str:
    return PREFIX + ":".join(parts)


def _fields(values: Mapping[str, str]) -> dict[Any, Any]:
    # redis-py's hset wants Mapping[EncodableT, EncodableT]; Mapping keys are invariant.
    return dict(values)


def _strs(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in dict(raw).items()}


def token_key(digest: str) -> str:
    return _k("token", digest)

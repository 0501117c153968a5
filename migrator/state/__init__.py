"""Progress, throughput, checkpoints, locks and connection caps in Redis.

Only this package talks to Redis.  Its modules:

    keys.py      every key (all under "migrator:") and what it holds: the schema
    store.py     StateStore: batches, mailbox rows, throughput, forwarding records;
                 MailboxStatus and NewJob
    locks.py     Lease, and taking, renewing and letting go of a mailbox's locks
    slots.py     connection caps: slots per server shared by every worker
    beats.py     heartbeats of running mailboxes, and requeuing those of dead workers
    uploads.py   upload budgets: bytes sent to a mailbox per window, across workers
    progress.py  RedisProgress: the copier's checkpoints and counts, fenced
    tokens.py    RedisTokenShelf: OAuth tokens shared by worker processes, sealed
    events.py    each mailbox's event log, bounded, and the EventSink the copier tells
    catalog.py   the batches Redis holds, replacing one, a row's skipped messages

Checkpoints are keyed by mailbox (source and target, canonical: mailboxid.py), not by
batch, so a later batch over the same mailboxes (a delta pass) starts from them too.
Every checkpoint a worker writes is fenced: the write happens only while that worker
holds the mailbox's locks, in the same script.  A lock that vanished is taken again only
when its epoch is still the worker's own (Redis emptied), never after another worker held
it (a worker paused past its lock, woken after the other finished).
"""

from migrator.state.catalog import BatchSummary
from migrator.state.keys import PREFIX
from migrator.state.locks import Lease
from migrator.state.progress import RedisProgress
from migrator.state.store import MailboxStatus, NewJob, StateStore

__all__ = [
    "PREFIX",
    "BatchSummary",
    "Lease",
    "MailboxStatus",
    "NewJob",
    "RedisProgress",
    "StateStore",
]

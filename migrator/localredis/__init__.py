"""Where the Redis is: MIGRATOR_REDIS_URL, checked before anything is written, or
the private redis-server of `migrator run` when that is not set.

    url.py     MIGRATOR_REDIS_URL: checked, pinged, shown without its password
    server.py  the state directory, and its private redis-server (PrivateRedis): started,
               joined by every command there, stopped by the last to leave
"""

from migrator.localredis.server import (
    SERVER_START_WAIT,
    SERVER_STOP_WAIT,
    START_LOCK_WAIT,
    STATE_DIR_ENV,
    PrivateRedis,
    state_dir,
    tighten,
)
from migrator.localredis.url import (
    PING_TIMEOUT,
    REDIS_URL_ENV,
    check_url,
    ping,
    shared_url,
    shown_url,
)

__all__ = [
    "PING_TIMEOUT",
    "REDIS_URL_ENV",
    "SERVER_START_WAIT",
    "SERVER_STOP_WAIT",
    "START_LOCK_WAIT",
    "STATE_DIR_ENV",
    "PrivateRedis",
    "check_url",
    "ping",
    "shared_url",
    "shown_url",
    "state_dir",
    "tighten",
]

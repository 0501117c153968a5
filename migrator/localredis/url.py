"""MIGRATOR_REDIS_URL: checked before anything is written (the scheme, the rediss
options Celery insists on), pinged once, and shown in messages without its password."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from migrator.errors import ConfigError

REDIS_URL_ENV = "MIGRATOR_REDIS_URL"

# How long `status`, `resume`, `run` and `enqueue` wait for a Redis to answer its first
# PING, before the retrying client (some 30 s of backoff, for a restart mid-run) is used.
PING_TIMEOUT = 3.0
# Celery's Redis result backend refuses a rediss:// URL without ssl_cert_reqs, after the
# first task is already queued; redis-py reads only these three spellings of it.
_CERT_REQS = ("required", "optional", "none")


def shown_url(url: str) -> str:
    """The URL for a message: its password (if any) as ***."""
    try:
        parts = urlsplit(url)
        if parts.password is not None:
            host = parts.hostname or ""
            host = f"[{host}]" if ":" in host else host
            port = f":{parts.port}" if parts.port is not None else ""
            parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}{port}")
        if "password" in parts.query.lower():  # redis-py reads ?password= too
            parts = parts._replace(query="...")
        return parts.geturl()
    except ValueError:
        return "(a URL that cannot be read)"


def check_url(url: str) -> None:
    """Raise ConfigError, in one line that never holds the password, unless `url` is a
    Redis URL that both redis-py (migrator's state) and Celery (its broker) can use."""
    where = f"{REDIS_URL_ENV} {shown_url(url)}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigError(f"{where}: not a URL with a host and a port") from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss"):
        raise ConfigError(f"{where}: use redis://host:port/db, or rediss:// for TLS")
    if not parts.hostname:
        raise ConfigError(f"{where}: no host")
    if port == 0:
        raise ConfigError(f"{where}: port 0")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ConfigError(f"{where}: the path must be a database number, e.g. /0")
    query = parse_qs(parts.query)
    if scheme == "rediss":
        reqs = query.get("ssl_cert_reqs", [""])[-1]
        if reqs not in _CERT_REQS:
            raise ConfigError(
                f"{where}: a rediss:// URL needs ?ssl_cert_reqs=required (or optional, or "
                "none: certificates not checked), which Celery insists on"
            )
    try:
        redis.ConnectionPool.from_url(url).disconnect()  # reads the URL, connects to nothing
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def ping(url: str, *, timeout: float = PING_TIMEOUT) -> None:
    """Raise ConfigError in one line unless the Redis at `url` answers within `timeout`
    seconds (to connect, and again to answer); one try, no backoff."""
    client = redis.Redis.from_url(
        url,
        socket_connect_timeout=timeout,
        socket_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except redis.BusyLoadingError:
        pass  # it answers; the retrying client waits out the loading
    except redis.AuthenticationError as exc:
        raise ConfigError(f"Redis at {shown_url(url)} refused the login: {exc}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ConfigError(f"Redis at {shown_url(url)} does not answer: {reason}") from None
    except redis.RedisError as exc:
        raise ConfigError(f"Redis at {shown_url(url)}: {exc}") from None
    finally:
        client.close()


def shared_url() -> str | None:
    """MIGRATOR_REDIS_URL once it is known to work (ConfigError if not), or None."""
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        return None
    check_url(url)
    ping(url)
    return url

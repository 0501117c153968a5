"""The workers' Celery app: the Redis transport it uses for redis:// and rediss:// URLs."""

from __future__ import annotations

import pytest

from workers.app import RedisTransport, app


@pytest.mark.parametrize(
    ("url", "tls"),
    [("redis://:pw@10.0.0.5:6379/0", False), ("rediss://:pw@10.0.0.5:6380/0", True)],
)
def test_both_redis_schemes_use_the_workers_transport_and_rediss_keeps_tls(
    url: str, tls: bool
) -> None:
    with app.connection_for_read(url) as connection:
        assert connection.transport_cls in ("redis", "rediss")
        assert isinstance(connection.transport, RedisTransport)
        assert bool(connection.ssl) is tls

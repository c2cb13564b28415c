"""A Redis client from a URL, for the producer and (through ``worker.redis_client``) the workers.

Accepted forms (the Redis the workers' ``broker_url`` names): ``redis://[:password@]host[:port][/db]``,
``rediss://...`` (TLS) and ``unix:///path/to.sock?db=N``.
"""

from __future__ import annotations

from typing import Any

import redis


def redis_client(
    url: str,
    *,
    max_connections: int | None = None,
    connect_timeout_s: float = 5.0,
    socket_timeout_s: float = 30.0,
    decode_responses: bool = True,
    **options: Any,
) -> redis.Redis:
    """A pooled client for ``url`` (thread-safe; one TCP connection per concurrent command)."""
    return redis.Redis.from_url(
        url,
        max_connections=max_connections,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        decode_responses=decode_responses,
        **options,
    )


def safe_url(url: str) -> str:
    """``url`` with any password or user name masked, for messages."""
    scheme, _, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{host}"

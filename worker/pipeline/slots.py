"""A counting semaphore in Redis: at most ``max_parallel`` delivery tasks drain one connection.

It keeps one slow provider from occupying every worker process. A slot held by a worker that died
expires on its own.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import redis

from worker import keys
from worker.redis_scripts import script

_ACQUIRE: Final = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  return 1
end
return 0
"""


def in_use(client: redis.Redis, connection: str, now: float | None = None) -> int:
    now = time.time() if now is None else now
    return int(client.zcount(keys.drain_slots(connection), f"({now}", "+inf"))


@contextmanager
def hold(client: redis.Redis, connection: str, limit: int, ttl_s: float) -> Iterator[bool]:
    """Take a slot for up to ``ttl_s``; yields whether one was free. Released on exit."""
    key = keys.drain_slots(connection)
    token = uuid.uuid4().hex
    now = time.time()
    acquired = bool(script(client, _ACQUIRE)(keys=[key], args=[now, limit, now + ttl_s, token]))
    try:
        yield acquired
    finally:
        if acquired:
            client.zrem(key, token)

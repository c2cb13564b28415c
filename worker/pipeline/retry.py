"""The retry schedule: exponential backoff with full jitter, inside a maximum age.

Records waiting for a retry live in a Redis sorted set per connection, scored by due time
(``keys.retry_zset``), never in a broker message with an ETA: delays of hours are fine and nothing
depends on the broker's visibility timeout. The scheduler promotes due records back into the
connection's buffer with one atomic script.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Final

import redis

from worker import keys
from worker.pipeline.buffer import RECORD_FIELD
from worker.records import DeliveryRecord
from worker.redis_scripts import script
from worker.settings import RetryPolicy

#: Most records one promotion moves per connection (the next tick moves the rest).
PROMOTE_BATCH: Final = 5000
#: Largest exponent used, so ``2 ** n`` never overflows a float.
MAX_EXPONENT: Final = 60

_PROMOTE_SCRIPT: Final = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', ARGV[3], member)
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


def backoff_ceiling_s(failed_attempts: int, policy: RetryPolicy) -> float:
    """Upper bound of the wait after ``failed_attempts`` failures (1 → ``base_s``)."""
    exponent = min(max(failed_attempts - 1, 0), MAX_EXPONENT)
    return float(min(policy.cap_s, policy.base_s * 2**exponent))


def backoff_s(failed_attempts: int, policy: RetryPolicy, rng: random.Random) -> float:
    """Full jitter: a uniform wait between zero and the exponential ceiling."""
    return rng.uniform(0.0, backoff_ceiling_s(failed_attempts, policy))


def deadline_s(record: DeliveryRecord, policy: RetryPolicy) -> float:
    """When the record's maximum age runs out (epoch seconds)."""
    return record.accepted_at + policy.max_age_s


@dataclass(frozen=True, slots=True)
class RetryPlan:
    """When to try again, or ``None`` as ``due`` when the schedule is exhausted."""

    due: float | None
    why_exhausted: str | None = None


def plan(
    record: DeliveryRecord,
    policy: RetryPolicy,
    *,
    now: float,
    not_before: float | None,
    rng: random.Random,
    counts_as_attempt: bool = True,
) -> RetryPlan:
    """Plan the next attempt of a record whose attempt just failed transiently.

    ``record.attempts`` counts attempts *before* this one. Waits that are not the record's fault
    (rate limit exhausted, circuit open) pass ``counts_as_attempt=False``: they wait as asked but do
    not use up attempts.
    """
    failed = record.attempts + (1 if counts_as_attempt else 0)
    deadline = deadline_s(record, policy)
    if counts_as_attempt and failed >= policy.max_attempts:
        return RetryPlan(None, f"{failed} attempts failed")
    if now >= deadline:
        return RetryPlan(None, f"maximum age of {policy.max_age_s:.0f}s reached")
    wait = backoff_s(failed, policy, rng) if counts_as_attempt else 0.0
    due = max(now + wait, not_before or 0.0)
    return RetryPlan(min(due, deadline))


def schedule(pipe: Any, record: DeliveryRecord, due: float) -> None:
    """Queue the record into its connection's retry set (on the caller's transaction)."""
    pipe.zadd(keys.retry_zset(record.connection), {record.model_dump_json(): due})


def promote_due(client: redis.Redis, connection: str, now: float, limit: int = PROMOTE_BATCH) -> int:
    """Move records whose time has come from the retry set back into the buffer, atomically."""
    moved = script(client, _PROMOTE_SCRIPT)(
        keys=[keys.retry_zset(connection), keys.buffer_stream(connection)], args=[now, limit, RECORD_FIELD]
    )
    return int(moved)


def waiting(client: redis.Redis, connection: str) -> int:
    """Records waiting for a retry on one connection."""
    return int(client.zcard(keys.retry_zset(connection)))


def next_due(client: redis.Redis, connection: str) -> float | None:
    first = client.zrange(keys.retry_zset(connection), 0, 0, withscores=True)
    return float(first[0][1]) if first else None

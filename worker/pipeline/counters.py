"""Cumulative counters per connection and per outcome, kept in Redis for every worker.

``unsub stats``, the Prometheus exporter and the tests read the same numbers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import redis

from worker import keys
from worker.redis_client import text_map


class Counter(StrEnum):
    DELIVERED = "delivered"
    RETRIED = "retried"
    DEAD = "dead_lettered"
    BATCHES = "batches"
    CALLS = "provider_calls"
    #: Records set aside while the circuit breaker is open or the credentials are refused, each
    #: counted once however often it is held again while it waits (records, not re-holds).
    HELD = "held"
    #: Records put back because our shared rate limit was spent or the provider said 429: a wait,
    #: not a failure (no attempt spent).
    RATE_LIMITED = "rate_limited"
    #: Records claimed but not sent before a drain's budget ran out or its worker stopped.
    HANDED_BACK = "handed_back"
    REPLAYED = "replayed"
    THROTTLED = "throttled_429"
    TOKEN_REFRESHES = "token_refreshes"
    #: Times the circuit breaker opened (first opening and every re-opening after a failed probe).
    BREAKER_OPENED = "breaker_opened"


class IntakeCounter(StrEnum):
    REQUESTS = "requests"
    ACCEPTED = "accepted"
    DUPLICATES = "duplicate_requests"
    DEDUPLICATED = "deduplicated_deliveries"
    INVALID = "invalid"
    DELIVERIES = "deliveries"
    #: Whole messages that could not be used (unreadable, too large, unknown task, poison).
    REFUSED_MESSAGES = "refused_messages"


def incr(pipe: Any, connection: str, counter: Counter | str, amount: int = 1) -> None:
    if amount:
        pipe.hincrby(keys.stats(connection), str(counter), amount)


def incr_dead_reason(pipe: Any, connection: str | None, reason: str) -> None:
    pipe.hincrby(keys.DLQ_REASON_TOTALS, reason, 1)
    if connection:
        pipe.hincrby(keys.stats(connection), str(Counter.DEAD), 1)
        pipe.hincrby(keys.stats(connection), f"dead:{reason}", 1)


def incr_intake(pipe: Any, counter: IntakeCounter, amount: int = 1) -> None:
    if amount:
        pipe.hincrby(keys.INTAKE_STATS, str(counter), amount)


def incr_intake_many(pipe: Any, amounts: dict[IntakeCounter, int]) -> None:
    """Queue every non-zero intake counter of one transaction."""
    for counter, amount in amounts.items():
        incr_intake(pipe, counter, amount)


def read_connection(client: redis.Redis, connection: str) -> dict[str, int]:
    return {k: int(v) for k, v in text_map(client.hgetall(keys.stats(connection))).items()}


def read_intake(client: redis.Redis) -> dict[str, int]:
    return {k: int(v) for k, v in text_map(client.hgetall(keys.INTAKE_STATS)).items()}


def read_dead_reasons(client: redis.Redis) -> dict[str, int]:
    return {k: int(v) for k, v in text_map(client.hgetall(keys.DLQ_REASON_TOTALS)).items()}

"""One snapshot of the system's numbers, read from Redis.

``unsub stats``, the Prometheus exporter and the tests all read this, so they agree. Its cost is
O(connections): a fixed number of commands per connection and per dead-letter reason ever used,
never a SCAN, so a scrape costs the same whatever else the keyspace holds.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from pydantic import BaseModel, Field

from worker.pipeline import buffer, counters, deadletters, retry
from worker.pipeline.breaker import Breaker
from worker.settings import Settings


class ConnectionStats(BaseModel):
    name: str
    type: str
    enabled: bool
    #: Records in the buffer (waiting or being delivered).
    pending: int
    #: Records waiting for a retry or for the circuit to close.
    waiting_retries: int
    next_retry_at: float | None
    oldest_pending_age_s: float | None
    breaker: str
    breaker_reason: str | None
    breaker_open_until: float | None
    dead_letters_now: int
    counters: dict[str, int] = Field(default_factory=dict)


class Snapshot(BaseModel):
    taken_at: float
    connections: list[ConnectionStats]
    intake: dict[str, int]
    dead_letters_by_reason: dict[str, int]
    dead_letters_total_by_reason: dict[str, int]
    dead_letters_now: int


def collect(client: redis.Redis, settings: Settings) -> Snapshot:
    now = time.time()
    conns = [_connection(client, settings, conn.name, now) for conn in settings.connections]
    totals = counters.read_dead_reasons(client)
    return Snapshot(
        taken_at=now,
        connections=conns,
        intake=counters.read_intake(client),
        dead_letters_by_reason=deadletters.counts_by_reason(client, totals),
        dead_letters_total_by_reason=totals,
        dead_letters_now=deadletters.count(client),
    )


def _connection(client: redis.Redis, settings: Settings, name: str, now: float) -> ConnectionStats:
    conn = settings.connection(name)
    state = Breaker(client, name, conn.breaker).read()
    oldest = buffer.oldest_entry_time_s(client, name)
    return ConnectionStats(
        name=name,
        type=conn.type,
        enabled=conn.enabled,
        pending=buffer.backlog(client, name),
        waiting_retries=retry.waiting(client, name),
        next_retry_at=retry.next_due(client, name),
        oldest_pending_age_s=round(now - oldest, 3) if oldest else None,
        breaker=state.state.value,
        breaker_reason=state.reason,
        breaker_open_until=state.open_until or None,
        dead_letters_now=deadletters.count(client, deadletters.Filter(connection=name)),
        counters=counters.read_connection(client, name),
    )


def as_dict(snapshot: Snapshot) -> dict[str, Any]:
    return snapshot.model_dump(mode="json")

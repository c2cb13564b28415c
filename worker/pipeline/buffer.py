"""The durable per-connection buffer: one Redis stream per connection with one consumer group.

A record enters with XADD, is claimed by a delivery task with XREADGROUP (it then sits in the
group's pending entries list), and leaves only with XACK + XDEL in the same transaction that records
its outcome. A claim whose worker died is taken over within seconds of its death (its heartbeat
lapses, :mod:`worker.pipeline.claims`), one whose worker hangs after ``reclaim_idle_s`` (XPENDING IDLE
+ XCLAIM). Nothing depends on Celery's visibility timeout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import redis

from worker import keys
from worker.pipeline import streams
from worker.redis_client import text

#: Field of a buffer entry that holds the record's JSON.
RECORD_FIELD: Final = "d"
#: A record claimed this many times without an outcome is treated as poison (it kills its worker).
MAX_DELIVERIES: Final = 25


@dataclass(frozen=True, slots=True)
class Entry:
    """One claimed buffer entry. ``payload`` is None when the entry has no record field (corrupt)."""

    entry_id: str
    payload: str | None
    deliveries: int = 1


def ensure_group(client: redis.Redis, connection: str) -> None:
    """Create the stream and its consumer group if they do not exist yet."""
    streams.ensure_group(client, keys.buffer_stream(connection), keys.BUFFER_GROUP)


def add(pipe: Any, connection: str, record_json: str) -> None:
    """Queue an XADD of one record on a pipeline (committed with the caller's transaction)."""
    pipe.xadd(keys.buffer_stream(connection), {RECORD_FIELD: record_json})


def read_new(client: redis.Redis, connection: str, consumer: str, count: int) -> list[Entry]:
    """Claim up to ``count`` records nobody has claimed yet."""
    claims = streams.read_new(client, keys.buffer_stream(connection), keys.BUFFER_GROUP, consumer, count)
    return [entry(c) for c in claims]


def reclaim_stale(
    client: redis.Redis, connection: str, consumer: str, *, min_idle_s: float, count: int
) -> list[Entry]:
    """Take over records claimed by a worker that has been silent for ``min_idle_s`` (it died)."""
    claims = streams.claim_stale(
        client,
        keys.buffer_stream(connection),
        keys.BUFFER_GROUP,
        consumer,
        min_idle_s=min_idle_s,
        count=count,
    )
    return [entry(c) for c in claims]


def keep_claimed(client: redis.Redis, connection: str, consumer: str, entry_ids: list[str]) -> int:
    """Reset the idle time of records this worker still holds, so nobody reclaims them."""
    return streams.refresh_claims(
        client, keys.buffer_stream(connection), keys.BUFFER_GROUP, consumer, entry_ids
    )


def entry(claim: streams.Claim) -> Entry:
    return Entry(claim.entry_id, claim.fields.get(RECORD_FIELD), claim.deliveries)


def remove(pipe: Any, connection: str, entry_id: str) -> None:
    """Queue XACK + XDEL of one record on a pipeline: it leaves the buffer with its outcome."""
    stream = keys.buffer_stream(connection)
    pipe.xack(stream, keys.BUFFER_GROUP, entry_id)
    pipe.xdel(stream, entry_id)


def remove_many(pipe: Any, connection: str, entry_ids: list[str]) -> None:
    """Queue one XACK and one XDEL for several records (they leave with their outcomes)."""
    if entry_ids:
        stream = keys.buffer_stream(connection)
        pipe.xack(stream, keys.BUFFER_GROUP, *entry_ids)
        pipe.xdel(stream, *entry_ids)


def backlog(client: redis.Redis, connection: str) -> int:
    """Records in the buffer: waiting plus claimed (entries leave the stream with their outcome)."""
    return int(client.xlen(keys.buffer_stream(connection)))


def oldest_entry_time_s(client: redis.Redis, connection: str) -> float | None:
    """When the oldest record still in the buffer was added (epoch seconds), from its stream id."""
    first = client.xrange(keys.buffer_stream(connection), count=1)
    if not first:
        return None
    millis = int(text(first[0][0]).split("-", 1)[0])
    return millis / 1000.0


def stale_claims(client: redis.Redis, connection: str, *, min_idle_s: float) -> int:
    """How many claimed records have been idle for at least ``min_idle_s`` (at most 1 counted)."""
    try:
        found = client.xpending_range(
            keys.buffer_stream(connection),
            keys.BUFFER_GROUP,
            min="-",
            max="+",
            count=1,
            idle=int(min_idle_s * 1000),
        )
    except redis.ResponseError:
        return 0
    return len(found)

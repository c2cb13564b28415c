"""Every Redis key the system writes, in one place.

Keys are plain strings on one Redis (no cluster hash tags). ``deploy/`` scales on
:func:`buffer_stream` and :data:`producer.names.INTAKE_QUEUE`; a test checks the manifests against
this module.
"""

from __future__ import annotations

import hashlib
from typing import Final

PREFIX: Final = "unsub:"

#: Consumer group of every per-connection buffer stream.
BUFFER_GROUP: Final = "deliver"
#: Consumer group of the language-neutral intake stream.
NATIVE_INTAKE_GROUP: Final = "intake"

#: Dead letters: id → JSON record (hash), and time-ordered indexes (sorted sets scored by time).
DLQ_ITEMS: Final = f"{PREFIX}dlq:items"
DLQ_INDEX: Final = f"{PREFIX}dlq:idx"
#: Cumulative dead letters per reason (hash reason → count), never decremented by purges.
DLQ_REASON_TOTALS: Final = f"{PREFIX}stats:dlq_reasons"
#: Intake counters (hash): accepted, duplicates, invalid, deliveries, ...
INTAKE_STATS: Final = f"{PREFIX}stats:_intake"
#: The scheduler's leadership lease (exactly one active scheduler).
SCHEDULER_LEASE: Final = f"{PREFIX}scheduler:lease"
SCHEDULER_HEARTBEAT: Final = f"{PREFIX}scheduler:heartbeat"


def buffer_stream(connection: str) -> str:
    """Durable buffer of records waiting for delivery to one connection (a Redis stream)."""
    return f"{PREFIX}buf:{connection}"


def retry_zset(connection: str) -> str:
    """Records waiting to be retried, scored by due time (epoch seconds)."""
    return f"{PREFIX}retry:{connection}"


def dlq_index_connection(connection: str) -> str:
    return f"{PREFIX}dlq:idx:conn:{connection}"


def dlq_index_reason(reason: str) -> str:
    return f"{PREFIX}dlq:idx:reason:{reason}"


def stats(connection: str) -> str:
    """Cumulative counters of one connection (hash)."""
    return f"{PREFIX}stats:{connection}"


def histogram(connection: str, name: str) -> str:
    """Bucket counts of one histogram of one connection (hash bucket → count, plus sum and count)."""
    return f"{PREFIX}hist:{connection}:{name}"


def request_status(request_id: str) -> str:
    """Status of one request's deliveries (hash delivery field → JSON), kept for the retention."""
    return f"{PREFIX}req:{request_id}"


def email_index(email: str) -> str:
    """Request ids seen for one address (a set) as earlier versions kept them; read, never written."""
    return f"{PREFIX}email:{hashlib.sha256(email.encode()).hexdigest()}"


def address(email: str) -> str:
    """One address's requests and de-duplication windows (hash, see ``pipeline.addresses``), keyed by
    a hash so the address is not a key name."""
    return f"{PREFIX}addr:{hashlib.sha256(email.encode()).hexdigest()}"


def consumer_alive(consumer: str) -> str:
    """Present while a stream consumer (an intake loop, a delivery process) is alive: its heartbeat."""
    return f"{PREFIX}alive:{consumer}"


def token(connection: str) -> str:
    """Cached access token of one connection (JSON with its expiry)."""
    return f"{PREFIX}token:{connection}"


def token_lock(connection: str) -> str:
    return f"{PREFIX}token:{connection}:lock"


def refresh_token(connection: str) -> str:
    """The latest (rotated) OAuth2 refresh token of one connection."""
    return f"{PREFIX}oauth:{connection}:refresh"


def contact_cache(connection: str) -> str:
    """Email → provider contact id cache of one connection (hash)."""
    return f"{PREFIX}contacts:{connection}"


def breaker(connection: str) -> str:
    """Circuit-breaker state of one connection (hash)."""
    return f"{PREFIX}breaker:{connection}"


def breaker_probe(connection: str) -> str:
    return f"{PREFIX}breaker:{connection}:probe"


def rate_limit_namespace(connection: str) -> str:
    return f"{PREFIX}rl:{connection}"


def rate_cooldown(connection: str) -> str:
    """Present while a connection is slowed down after a 429 (shared by every worker)."""
    return f"{PREFIX}rl:{connection}:cooldown"


def trigger(connection: str) -> str:
    """Short lock that keeps delivery triggers for one connection from piling up."""
    return f"{PREFIX}trig:{connection}"


def trigger_later(connection: str) -> str:
    """Present while a delayed delivery trigger of one connection is queued (one at a time)."""
    return f"{PREFIX}trig:{connection}:later"


def drain_slots(connection: str) -> str:
    """Semaphore of delivery tasks draining one connection (sorted set token → expiry)."""
    return f"{PREFIX}slots:{connection}"

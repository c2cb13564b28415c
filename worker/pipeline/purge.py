"""Forgetting a connection removed from the configuration: every key kept under its name.

Most keys of a connection never expire (its counters, histograms, breaker, rotated refresh token):
they are bounded by the configuration, one set per configured connection. Once a connection is
removed from the configuration nothing writes them any more, and nothing reads or deletes them
either; ``unsub stats --purge-connection NAME --yes`` does (``docs/redis-keys.md`` lists the keys).

A connection that is still configured is refused (its workers would write the keys again at once),
and so is one whose buffer or retry set still holds records: they would be lost without a trace. Its
dead letters stay (``unsub dlq purge --connection NAME``, or they leave after ``dlq_retention_s``),
as do the statuses of its deliveries (``status_retention_s``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

import redis

from worker import keys
from worker.redis_client import text

#: Every key kept under one connection's name by a builder of ``worker.keys`` (besides the
#: patterns of :data:`PATTERNS`).
KEY_BUILDERS: Final[tuple[Callable[[str], str], ...]] = (
    keys.stats,
    keys.breaker,
    keys.breaker_probe,
    keys.token,
    keys.token_lock,
    keys.refresh_token,
    keys.contact_cache,
    keys.trigger,
    keys.trigger_later,
    keys.drain_slots,
    keys.buffer_stream,
    keys.retry_zset,
)
#: Keys found by pattern: the connection's histograms, and its rate-limit windows (its own and its
#: token endpoint's, namespace ``<name>:token``) with its 429 cooldown (``keys.rate_cooldown``).
PATTERNS: Final[tuple[Callable[[str], str], ...]] = (
    lambda name: keys.histogram(name, "*"),
    lambda name: f"{keys.rate_limit_namespace(name)}:*",
)
#: Keys SCAN asks for per call.
SCAN_COUNT: Final = 1000
#: A connection name as the configuration allows it (``worker.connection.ConnectionBase.name``): no
#: glob character can reach a SCAN pattern.
_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class PurgePlan:
    """What purging one connection would delete, or why it may not."""

    connection: str
    keys: list[str]
    #: Why the purge is refused (empty: it may go ahead).
    refusals: list[str]


def plan_purge(client: redis.Redis, connection: str, configured: frozenset[str]) -> PurgePlan:
    """The existing keys of ``connection`` and the reasons (if any) not to delete them."""
    if not _NAME.match(connection):
        return PurgePlan(connection, [], [f"{connection!r} is not a connection name"])
    refusals = []
    if connection in configured:
        refusals.append(f"{connection} is still configured: remove it from the configuration first")
    buffered = int(client.xlen(keys.buffer_stream(connection)))
    waiting = int(client.zcard(keys.retry_zset(connection)))
    if buffered or waiting:
        refusals.append(
            f"{connection} still holds {buffered} buffered and {waiting} waiting record(s): "
            "deliver them (configure it again) or they are lost"
        )
    return PurgePlan(connection, sorted(set(_existing(client, connection))), refusals)


def purge(client: redis.Redis, plan: PurgePlan) -> int:
    """Delete the planned keys (refused plans delete nothing); returns how many existed."""
    if plan.refusals or not plan.keys:
        return 0
    return int(client.unlink(*plan.keys))


def _existing(client: redis.Redis, connection: str) -> Iterator[str]:
    fixed = [build(connection) for build in KEY_BUILDERS]
    pipe = client.pipeline(transaction=False)
    for key in fixed:
        pipe.exists(key)
    yield from (key for key, found in zip(fixed, pipe.execute(), strict=True) if found)
    for pattern in PATTERNS:
        yield from (text(k) for k in client.scan_iter(match=pattern(connection), count=SCAN_COUNT))

"""Which buffered records a drain claims, in order:

1. this process's own pending records, once per connection when it first drains it (a worker that
   starts again under the same consumer name takes its claims back at once; see
   :mod:`worker.pipeline.liveness` for the names);
2. records of consumers whose heartbeat is gone (killed), else records a live consumer's name still
   holds from before its process took the name (a restarted worker's process that does not drain
   this connection), at most every :data:`ORPHAN_CHECK_S`;
3. records idle past ``reclaim_idle_s`` whoever holds them (a process alive but hung: the last resort);
4. new records.

The first three count as ``reclaimed``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Final

import redis

from worker import keys
from worker.pipeline import buffer, liveness, streams

#: How often one process looks for dead consumers' records on one connection.
ORPHAN_CHECK_S: Final = 1.0


@dataclass
class ClaimState:
    """Per process: which connections' own claims were taken back, and when orphans were last sought."""

    adopted: set[str] = field(default_factory=set)
    last_orphan_check: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def first_drain(self, connection: str) -> bool:
        with self.lock:
            if connection in self.adopted:
                return False
            self.adopted.add(connection)
            return True

    def forget(self, connection: str) -> None:
        """The next drain of ``connection`` takes this process's own pending records back first."""
        with self.lock:
            self.adopted.discard(connection)

    def orphan_check_due(self, connection: str, now: float) -> bool:
        with self.lock:
            if now - self.last_orphan_check.get(connection, 0.0) < ORPHAN_CHECK_S:
                return False
            self.last_orphan_check[connection] = now
            return True


@dataclass(frozen=True)
class Claimed:
    entries: list[buffer.Entry]
    #: The entries were someone else's (or this name's before a restart), not new.
    reclaimed: bool


def claim(
    client: redis.Redis,
    state: ClaimState,
    connection: str,
    consumer: str,
    *,
    count: int,
    reclaim_idle_s: float,
) -> Claimed:
    stream, group = keys.buffer_stream(connection), keys.BUFFER_GROUP
    if state.first_drain(connection):
        own = streams.claim_from(client, stream, group, consumer, owner=consumer, min_idle_s=0, count=count)
        if own:
            return Claimed([buffer.entry(c) for c in own], reclaimed=True)
    if state.orphan_check_due(connection, time.monotonic()):
        dead = liveness.dead_consumers(client, stream, group, exclude=consumer)
        orphans = liveness.take_over(client, stream, group, consumer, dead=dead, count=count)
        orphans = orphans or liveness.take_over_inherited(client, stream, group, consumer, count=count)
        if orphans:
            return Claimed([buffer.entry(c) for c in orphans], reclaimed=True)
    stale = buffer.reclaim_stale(client, connection, consumer, min_idle_s=reclaim_idle_s, count=count)
    if stale:
        return Claimed(stale, reclaimed=True)
    return Claimed(buffer.read_new(client, connection, consumer, count), reclaimed=False)

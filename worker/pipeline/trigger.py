"""Starting delivery tasks: when a batch is full (intake) and every flush interval (scheduler).

A short Redis lock per connection keeps triggers from piling up in the queue (a drain that ended on
the rate limit or an open breaker holds it until the connection can send again), and no trigger is
sent while every drain slot of the connection is taken. A trigger is only a hint: the records are in
the buffer, so a lost trigger message costs at most one flush interval.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from producer import names
from worker import keys
from worker.pipeline import slots
from worker.settings import Connection

if TYPE_CHECKING:
    from worker.pipeline.runtime import Runtime

DELIVER_TASK: Final = "unsub.deliver"
REFRESH_TOKEN_TASK: Final = "unsub.refresh_token"
#: Least time between two triggers of one connection.
TRIGGER_GAP_S: Final = 0.2
#: Longest delay of a delayed trigger (the scheduler's ticks cover anything longer).
MAX_LATER_S: Final = 30.0


def trigger_later(rt: Runtime, conn: Connection, delay_s: float) -> bool:
    """Queue one delivery task for when ``conn`` can send again (a rate-limit turn, a breaker's
    probe time): the drain that found it waiting ended rather than occupy a process, and this hint
    starts the next one on time instead of at a scheduler tick. One such hint per wait."""
    delay_s = min(delay_s, MAX_LATER_S)
    if delay_s <= 0:
        return maybe_trigger(rt, conn)
    if not rt.redis.set(keys.trigger_later(conn.name), "1", nx=True, px=max(int(delay_s * 1000), 1)):
        return False
    rt.send_task(DELIVER_TASK, [conn.name], names.delivery_queue(conn.type), countdown=delay_s)
    return True


def maybe_trigger(rt: Runtime, conn: Connection, *, gap_s: float = TRIGGER_GAP_S) -> bool:
    """Queue one delivery task for ``conn`` unless one was queued just now or all slots are busy."""
    if slots.in_use(rt.redis, conn.name) >= conn.max_parallel:
        return False
    if not rt.redis.set(keys.trigger(conn.name), "1", nx=True, px=max(int(gap_s * 1000), 1)):
        return False
    rt.send_task(DELIVER_TASK, [conn.name], names.delivery_queue(conn.type))
    return True

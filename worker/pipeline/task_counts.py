"""A delivery task's counts, added up across its runs.

The counts a delivery task returns (and Celery stores in the result backend) are added up in Redis
under the task id, in the very transaction that records each batch's outcomes. A task whose worker
was killed after recording some batches and that runs again with the same id then returns what the
killed run recorded too, so the results always add up to the counters.
"""

from __future__ import annotations

from typing import Any, Final

import redis

from worker import keys
from worker.pipeline.outcomes import Tally
from worker.redis_client import text_map

#: Counts of one delivery task, added up across its runs (a redelivered task keeps its id).
TASK_COUNTS_PREFIX: Final = f"{keys.PREFIX}taskcounts:"
#: Report fields added up per task id (``dead:<reason>`` fields carry the dead-letter reasons).
SUMMED: Final = (
    "batches",
    "delivered",
    "retried",
    "dead_lettered",
    "held",
    "rate_limited",
    "handed_back",
    "provider_calls",
    "reclaimed",
)
REASON_FIELD: Final = "dead:"


def key(task_id: str) -> str:
    return f"{TASK_COUNTS_PREFIX}{task_id}"


def queue(
    pipe: Any, task_key: str, tally: Tally, *, calls: int, batches: int, reclaimed: int, ttl_s: float
) -> None:
    """Add one transaction's counts to the task's running totals (on the same transaction)."""
    amounts = {
        "delivered": tally.delivered,
        "retried": tally.retried,
        "dead_lettered": tally.dead_lettered,
        "held": tally.held,
        "rate_limited": tally.rate_limited,
        "handed_back": tally.handed_back,
        "provider_calls": calls,
        "batches": batches,
        "reclaimed": reclaimed,
        **{f"{REASON_FIELD}{r}": n for r, n in tally.reasons.items()},
    }
    queued = False
    for name, amount in amounts.items():
        if amount:
            pipe.hincrby(task_key, name, amount)
            queued = True
    if queued:
        pipe.expire(task_key, int(ttl_s))


def totals(client: redis.Redis, task_id: str) -> dict[str, int]:
    return {k: int(v) for k, v in text_map(client.hgetall(key(task_id))).items()}

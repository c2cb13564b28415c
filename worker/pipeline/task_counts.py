"""A delivery task's counts, added up across its runs.

The counts a delivery task returns (and Celery stores in the result backend) are added up in Redis
under the task id, in the very transaction that records each batch's outcomes. A task whose worker
was killed after recording some batches and that runs again with the same id then returns what the
killed run recorded too (:class:`DrainReport`, :func:`take_totals`), so the results always add up
to the counters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Final

import redis

from worker import keys
from worker.logs import get_logger
from worker.pipeline.breaker import Mode
from worker.pipeline.outcomes import COUNTED, Tally
from worker.redis_client import text_map

log = get_logger(__name__)

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


@dataclass
class DrainReport:
    """The counts a delivery task returns to the result backend."""

    connection: str
    mode: str = Mode.NORMAL.value
    skipped: str | None = None
    batches: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    held: int = 0
    rate_limited: int = 0
    handed_back: int = 0
    provider_calls: int = 0
    reclaimed: int = 0
    #: The drain ended early because its worker is shutting down.
    stopped: bool = False
    #: The drain ended because the connection's rate limit gave no turn now (seconds to the next).
    paused_for_rate_limit_s: float | None = None
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    def add(self, tally: Tally) -> None:
        for name in COUNTED:
            setattr(self, name, getattr(self, name) + getattr(tally, name))
        for reason, n in tally.reasons.items():
            self.dead_letter_reasons[reason] = self.dead_letter_reasons.get(reason, 0) + n

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def take_totals(self, totals: dict[str, int]) -> None:
        """Replace the counts with the task's totals over all its runs."""
        for name in SUMMED:
            setattr(self, name, max(totals.get(name, 0), getattr(self, name)))
        prefix = REASON_FIELD
        for reason, n in ((k[len(prefix) :], v) for k, v in totals.items() if k.startswith(prefix)):
            self.dead_letter_reasons[reason] = max(n, self.dead_letter_reasons.get(reason, 0))


def take_totals(client: redis.Redis, report: DrainReport, task_id: str) -> None:
    """Give ``report`` the task's totals over all its runs (an earlier run may have been killed)."""
    found = totals(client, task_id)
    if not found:
        return
    if any(found.get(name, 0) > getattr(report, name) for name in SUMMED):
        log.info("counts include an earlier, interrupted run of this task", task_id=task_id)
    report.take_totals(found)

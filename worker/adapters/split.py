"""Split retries: find the records a provider refuses by halving the batch, deliver the rest.

An adapter's ``attempt`` sends one call for some records and says what came of it:

- a list of outcomes, one per record: final;
- :class:`Rejected`: the provider refused the call as a whole (a 400 naming no record);
- :class:`PartlyFailed`: the provider says ``failed`` of the records failed without naming them
  (WhatCounts' counts).

A refused or partly failed call of several records is split in two halves and each half is sent
again; a lone record the provider still refuses gets the refusal's outcome (dead). Sending a record
again is harmless: unsubscribing twice is not an error anywhere. Only what a call itself answered is
believed: no record is ever counted as delivered by subtracting counts of different calls.

Splitting is bounded: isolating every record of a batch of n could take 2n-1 calls. A
:class:`SplitBudget` allows the calls needed to isolate about two refused records
(:func:`split_calls_for`: 4·⌈log2 n⌉, 36 for 500 records) and ends at a deadline (by default
:data:`SPLIT_DEADLINE_S` after the batch's first call). Once either is spent, no further call is
made: the records of every part not yet resolved get a ``retry`` outcome (``split_budget_exhausted``)
and come back later in a new batch, while what was already resolved keeps its outcome. The first call
of a batch is never refused by the budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from worker.adapters.base import Outcome
from worker.reasons import RetryCause
from worker.records import DeliveryRecord

#: Reason of the retry outcome of records left unresolved when the split budget ran out.
SPLIT_BUDGET_EXHAUSTED: Final = RetryCause.SPLIT_BUDGET_EXHAUSTED
#: Refused records a split budget can isolate in full (each costs about 2·log2(n) calls).
ISOLATED_RECORDS: Final = 2
#: Longest time spent splitting one batch (the default ``drain_budget_s`` of a delivery task).
SPLIT_DEADLINE_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class Rejected:
    """The provider refused the whole call; ``outcome`` is what a lone refused record gets."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class PartlyFailed:
    """``failed`` records of the call failed, unnamed; ``outcome`` is what each failed record gets."""

    failed: int
    outcome: Outcome
    #: What each record that did not fail gets (delivered, with the call's status).
    success: Outcome


Result = list[Outcome] | Rejected | PartlyFailed
Attempt = Callable[[Sequence[DeliveryRecord]], Result]


def split_calls_for(size: int) -> int:
    """Calls after the first that may be spent splitting a batch of ``size`` records."""
    return ISOLATED_RECORDS * 2 * math.ceil(math.log2(size)) if size > 1 else 0


@dataclass(slots=True)
class SplitBudget:
    """Calls and time one batch may spend isolating refused records."""

    #: Calls after the batch's first one.
    max_calls: int
    #: ``clock()`` value after which no further split call is made (None: no deadline).
    deadline: float | None = None
    clock: Callable[[], float] = time.monotonic
    spent: int = field(default=0, init=False)

    @classmethod
    def for_batch(
        cls,
        size: int,
        *,
        deadline_s: float | None = SPLIT_DEADLINE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> SplitBudget:
        deadline = None if deadline_s is None else clock() + deadline_s
        return cls(split_calls_for(size), deadline, clock)

    def take(self) -> bool:
        """Spend one call if any is left and the deadline has not passed."""
        if self.spent >= self.max_calls or (self.deadline is not None and self.clock() >= self.deadline):
            return False
        self.spent += 1
        return True


def deliver_isolating(
    batch: Sequence[DeliveryRecord], attempt: Attempt, budget: SplitBudget | None = None
) -> list[Outcome]:
    """Send ``batch``; split it while the provider refuses part of it. One outcome per record."""
    if not batch:
        return []
    spend = budget if budget is not None else SplitBudget.for_batch(len(batch))
    return _resolve(batch, attempt(batch), attempt, spend)


def _resolve(
    batch: Sequence[DeliveryRecord], result: Result, attempt: Attempt, budget: SplitBudget
) -> list[Outcome]:
    if isinstance(result, list):
        return result
    if isinstance(result, PartlyFailed):
        failed = min(max(result.failed, 0), len(batch))
        if failed == 0:
            return [result.success] * len(batch)
        if failed == len(batch):
            # The call itself says every one of its records failed.
            return [result.outcome] * len(batch)
    elif len(batch) == 1:
        return [result.outcome]
    middle = len(batch) // 2
    outcomes: list[Outcome] = []
    for half in (batch[:middle], batch[middle:]):
        if budget.take():
            outcomes += _resolve(half, attempt(half), attempt, budget)
        else:
            outcomes += [_unresolved(result, len(half), budget)] * len(half)
    return outcomes


def _unresolved(result: Rejected | PartlyFailed, size: int, budget: SplitBudget) -> Outcome:
    refusal = result.outcome
    why = "deadline" if budget.spent < budget.max_calls else f"{budget.max_calls} extra calls"
    message = (
        f"the provider refused part of a call and the split budget ({why}) ran out before these "
        f"{size} record(s) were told apart; they are sent again later. Refusal: {refusal.message}"
    )
    return Outcome.retry(SPLIT_BUDGET_EXHAUSTED, message, status=refusal.status, excerpt=refusal.excerpt)

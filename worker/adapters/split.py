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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.adapters.base import Outcome
from worker.records import DeliveryRecord


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


def deliver_isolating(batch: Sequence[DeliveryRecord], attempt: Attempt) -> list[Outcome]:
    """Send ``batch``; split it while the provider refuses part of it. One outcome per record."""
    if not batch:
        return []
    return _resolve(batch, attempt(batch), attempt)


def _resolve(batch: Sequence[DeliveryRecord], result: Result, attempt: Attempt) -> list[Outcome]:
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
    return deliver_isolating(batch[:middle], attempt) + deliver_isolating(batch[middle:], attempt)

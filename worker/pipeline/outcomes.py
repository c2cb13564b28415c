"""Recording what happened to each record, atomically with its removal from the buffer.

For every record the status, the counters, and either its retry or its dead letter are queued on
one MULTI/EXEC transaction together with XACK + XDEL of its buffer entry (one XACK and one XDEL for
all the transaction's entries, one HINCRBY per counter: a batch costs about one HSET and one EXPIRE
per record plus a handful of commands). If the process dies before
EXEC, nothing was recorded and the record is still claimed: it is delivered again (the provider
calls are idempotent). If it dies after, the record left the buffer with its outcome. Either way
nothing is lost.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import redis

from worker.adapters.base import Outcome, OutcomeKind
from worker.pipeline import addresses, buffer, counters, deadletters, retry, status
from worker.pipeline.counters import Counter
from worker.pipeline.deadletters import Reason
from worker.pipeline.status import DeliveryState
from worker.reasons import NOT_AN_ATTEMPT, DeadReason
from worker.records import DeliveryRecord
from worker.redis_batch import Batch
from worker.settings import Connection


class HoldCause(StrEnum):
    """Why a record is set aside without a delivery attempt."""

    BREAKER_OPEN = "breaker_open"
    AUTH_FAILED = DeadReason.AUTH_FAILED.value
    HANDED_BACK = "handed_back"


#: The counter each hold cause adds to: only breaker and credential holds count as ``held``, once
#: per record (a record held again when it comes due while the connection is still held is not
#: counted again: ``held`` counts records, not re-holds).
_HOLD_COUNTER: Final = {
    HoldCause.BREAKER_OPEN: Counter.HELD,
    HoldCause.AUTH_FAILED: Counter.HELD,
    HoldCause.HANDED_BACK: Counter.HANDED_BACK,
}

#: A bare hold cause as a record's last error says why it waited, not what failed.
_HOLD_CAUSES: Final = frozenset(c.value for c in HoldCause)


@dataclass
class Tally:
    """What one transaction recorded."""

    delivered: int = 0
    #: Provider failures that will be tried again (each spent an attempt).
    retried: int = 0
    dead_lettered: int = 0
    #: Records set aside while the breaker is open or the credentials are refused (each once).
    held: int = 0
    #: Put back because our shared rate limit was spent or the provider said 429 (no attempt spent).
    rate_limited: int = 0
    #: Claimed but not sent before the drain's budget ran out or the worker stopped.
    handed_back: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, other: Tally) -> None:
        for name in COUNTED:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for reason, n in other.reasons.items():
            self.reasons[reason] = self.reasons.get(reason, 0) + n


#: Tally fields that are plain counts (a drain's report adds them up), and the per-connection
#: counter each one adds to.
COUNTED: Final = ("delivered", "retried", "dead_lettered", "held", "rate_limited", "handed_back")
_COUNTER_OF: Final = {
    "delivered": Counter.DELIVERED,
    "retried": Counter.RETRIED,
    "held": Counter.HELD,
    "rate_limited": Counter.RATE_LIMITED,
    "handed_back": Counter.HANDED_BACK,
}


@dataclass
class OutcomeWriter:
    """Queues outcomes for one connection on one transaction; ``commit()`` executes it."""

    client: redis.Redis
    connection: Connection
    retention_s: float
    rng: random.Random
    now: float = field(default_factory=time.time)
    tally: Tally = field(default_factory=Tally)

    def __post_init__(self) -> None:
        self.pipe = Batch(self.client)
        self._removed: list[str] = []

    def record(
        self, entry_id: str, record: DeliveryRecord, outcome: Outcome, *, attempted: bool = True
    ) -> None:
        """Queue one record's outcome and its removal from the buffer."""
        if outcome.kind is OutcomeKind.DELIVERED:
            self._delivered(record, attempted)
        elif outcome.kind is OutcomeKind.DEAD:
            self._dead(record, outcome.reason or Reason.REJECTED_BY_PROVIDER, outcome, attempted=attempted)
        elif outcome.kind is OutcomeKind.RETRY:
            self._retry(record, outcome)
        else:
            until = outcome.not_before or self.now
            self.hold(entry_id, record, HoldCause.AUTH_FAILED, until=until, detail=outcome.message)
            return
        self._removed.append(entry_id)

    def hold(
        self,
        entry_id: str,
        record: DeliveryRecord,
        cause: HoldCause,
        *,
        until: float,
        detail: str | None = None,
    ) -> None:
        """Set a record aside until ``until`` without spending an attempt (dead-lettered if too old).

        It never waits past its maximum age: a cool-down that ends later is cut to the deadline, where
        the record gets its last chance (or is dead-lettered if the connection is still held).
        ``detail`` says why (the provider's answer); without one the record's last error is kept, so
        status and the final dead letter still say what stopped the connection.
        """
        deadline = retry.deadline_s(record, self.connection.retry)
        until = min(until, deadline)
        earlier = record.last_error if record.last_error not in _HOLD_CAUSES else None
        last_error = f"{cause.value}: {detail}" if detail else earlier
        if self.now >= deadline:
            reason = Reason.AUTH_FAILED if cause is HoldCause.AUTH_FAILED else Reason.RETRIES_EXHAUSTED
            message = f"maximum age of {self.connection.retry.max_age_s:.0f}s reached while {cause.value}"
            message += f"; last error: {last_error}" if last_error else ""
            letter = self._letter(record, reason, message, None, attempts=record.attempts)
            self._write_dead(record, letter)
        else:
            retry.schedule(self.pipe, self._set_aside(record, cause, last_error or cause.value), until)
            self._status(
                record,
                DeliveryState.RETRYING,
                attempts=record.attempts,
                next_attempt_at=until,
                reason=cause.value,
                message=detail or (f"last error: {last_error}" if last_error else None),
            )
        self._removed.append(entry_id)

    def dead_letter(
        self, entry_id: str, letter: deadletters.DeadLetter, record: DeliveryRecord | None
    ) -> None:
        """Dead-letter an entry that cannot even be read as a record (corrupt, poison)."""
        if record is not None:
            self._write_dead(record, letter)
        else:
            deadletters.write(self.pipe, letter)
            self._count_reason(letter.reason)
        self._removed.append(entry_id)

    def commit(self) -> Tally:
        """Queue the transaction's counters and buffer removals, then execute it."""
        for name, counter in _COUNTER_OF.items():
            counters.incr(self.pipe, self.connection.name, counter, getattr(self.tally, name))
        buffer.remove_many(self.pipe, self.connection.name, self._removed)
        self.pipe.execute()
        return self.tally

    # ------------------------------------------------------------------------------------------

    def _set_aside(self, record: DeliveryRecord, cause: HoldCause, last_error: str) -> DeliveryRecord:
        """The record as it waits, counted under its cause's counter (``held`` once per record)."""
        counter = _HOLD_COUNTER[cause]
        update: dict[str, object] = {"last_error": last_error}
        if counter is Counter.HELD:
            update["held_since"] = record.held_since or self.now
        if counter is not Counter.HELD or record.held_since is None:
            setattr(self.tally, str(counter), getattr(self.tally, str(counter)) + 1)
        return record.model_copy(update=update)

    def _delivered(self, record: DeliveryRecord, attempted: bool) -> None:
        attempts = record.attempts + (1 if attempted else 0)
        self._status(record, DeliveryState.DELIVERED, attempts=attempts, delivered_at=self.now)
        self.tally.delivered += 1

    def _retry(self, record: DeliveryRecord, outcome: Outcome) -> None:
        counts = (outcome.reason or "") not in NOT_AN_ATTEMPT
        plan = retry.plan(
            record,
            self.connection.retry,
            now=self.now,
            not_before=outcome.not_before,
            rng=self.rng,
            counts_as_attempt=counts,
        )
        attempts = record.attempts + (1 if counts else 0)
        last_error = f"{outcome.reason}: {outcome.message}" if outcome.message else outcome.reason
        if plan.due is None:
            message = f"{plan.why_exhausted}; last error: {last_error}"
            letter = self._letter(record, Reason.RETRIES_EXHAUSTED, message, outcome, attempts=attempts)
            self._write_dead(record, letter)
            return
        again = record.model_copy(
            update={
                "attempts": attempts,
                "first_attempt_at": record.first_attempt_at or (self.now if counts else None),
                "last_error": last_error,
            }
        )
        retry.schedule(self.pipe, again, plan.due)
        self._status(
            record,
            DeliveryState.RETRYING,
            attempts=attempts,
            next_attempt_at=plan.due,
            reason=outcome.reason,
            message=outcome.message,
        )
        if counts:
            self.tally.retried += 1
        else:
            self.tally.rate_limited += 1

    def _dead(self, record: DeliveryRecord, reason: str, outcome: Outcome, *, attempted: bool) -> None:
        attempts = record.attempts + (1 if attempted else 0)
        letter = self._letter(record, reason, outcome.message or reason, outcome, attempts=attempts)
        self._write_dead(record, letter)

    def _letter(
        self, record: DeliveryRecord, reason: str, message: str, outcome: Outcome | None, *, attempts: int
    ) -> deadletters.DeadLetter:
        return deadletters.for_record(
            record,
            reason=reason,
            message=message,
            provider=self.connection.type,
            status=outcome.status if outcome else None,
            excerpt=outcome.excerpt if outcome else None,
            attempts=attempts,
            now=self.now,
        )

    def _write_dead(self, record: DeliveryRecord, letter: deadletters.DeadLetter) -> None:
        deadletters.write(self.pipe, letter)
        # A dead delivery must not keep a later request for the same address out of the window.
        addresses.close_window(self.pipe, record.email, record.connection, record.target)
        self._status(
            record,
            DeliveryState.DEAD_LETTERED,
            attempts=letter.attempts,
            reason=letter.reason,
            message=letter.message,
        )
        self._count_reason(letter.reason)

    def _count_reason(self, reason: str) -> None:
        self.tally.dead_lettered += 1
        self.tally.reasons[reason] = self.tally.reasons.get(reason, 0) + 1

    def _status(self, record: DeliveryRecord, state: DeliveryState, **fields: object) -> None:
        status.write(
            self.pipe,
            record.request_id,
            status.for_record(record, state, self.now, **fields),
            self.retention_s,
        )

"""Working a batch of one-record calls a few at a time, for providers with no bulk operation.

Constant Contact's contacts API and easy.tools take one contact per call, so a batch of their
records is a series of round trips. :class:`RecordPool` overlaps them: up to ``parallel_calls``
records of a batch are in flight at once, each on a thread of a small pool owned by the adapter
(one pool per connection per worker process, built on first use, again after a fork). Outcomes
come back in record order.

What the threads share is safe to share: the pooled ``httpx.Client``, the Redis client (a
connection pool), the shared rate limiter (``deps.gate``: one atomic Redis script per call, so every
call of every thread still takes its own turn and the limit stays exact), and the token manager
(its renewal lock and compare-and-delete are in Redis, so threads of one process make one token
request per expiry just as processes do). The call observer is not: :class:`LockedObserver` puts a
lock around it. Each record runs in a copy of the caller's context, so log lines keep the task's
bound fields (connection, task id).

A record whose work raises is that record's ``retry`` (``adapter_error``), logged with its
traceback; the other records of the batch keep their outcomes.
"""

from __future__ import annotations

import contextvars
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Final

from limits import parse_many
from pydantic import Field

from worker.adapters.base import AdapterDeps, CallObserver, Outcome
from worker.adapters.common import HttpAdapter
from worker.connection import ConnectionBase
from worker.logs import get_logger
from worker.reasons import RetryCause
from worker.records import DeliveryRecord

log = get_logger(__name__)

#: Records in one batch per concurrent call: a batch of ``3 * parallel_calls`` (24 by default) is at
#: least the delivery step's smallest claim of 10 records, so a claim is one full batch rather than a
#: full one and a remainder that leaves threads idle, and it stays short (a warm shutdown waits for it).
RECORDS_PER_CALL_SLOT: Final = 3
#: Longest batch of one-record calls, whatever ``batch_size`` says.
MAX_ONE_RECORD_BATCH: Final = 100
#: Under a rate limit, a batch's calls should take about this long at the drain's share of the limit.
RATE_LIMITED_BATCH_S: Final = 1.0
#: Calls one record usually takes (a search, then the write).
CALLS_PER_RECORD: Final = 2
#: Limits with windows up to this long pace a batch; longer ones only stop it once spent.
SUSTAINED_WINDOW_MAX_S: Final = 60
ADAPTER_ERROR: Final = RetryCause.ADAPTER_ERROR

DeliverOne = Callable[[DeliveryRecord], Outcome]


def one_record_batch_size(
    parallel_calls: int,
    batch_size: int | None,
    rate_limit: str | None = None,
    max_parallel: int = 1,
) -> int:
    """Records a batch of a one-record-per-call provider carries (``batch_size`` wins when set).

    Under a rate limit a batch is cut so that its calls, at this drain's share of the limit
    (``max_parallel`` drains may share it), take about :data:`RATE_LIMITED_BATCH_S`: a batch must
    end long before the pipeline would think its records abandoned (``reclaim_idle_s``), and more
    records in flight cannot beat the limit anyway. Constant Contact's 4/second and easy.tools'
    100/minute give one record a batch, as before calls were overlapped.
    """
    if batch_size:
        return max(1, min(batch_size, MAX_ONE_RECORD_BATCH))
    wanted = parallel_calls * RECORDS_PER_CALL_SLOT
    per_second = sustained_rate(rate_limit)
    if per_second is not None:
        share = per_second / max(max_parallel, 1)
        wanted = min(wanted, int(share * RATE_LIMITED_BATCH_S / CALLS_PER_RECORD))
    return max(1, min(wanted, MAX_ONE_RECORD_BATCH))


def sustained_rate(rate_limit: str | None) -> float | None:
    """Calls a second the tightest limit with a window of at most a minute allows (None: no such limit).

    Longer windows (``10000/day``) do not slow a batch down: once spent, a call is handed back at once.
    """
    if not rate_limit:
        return None
    rates = [
        item.amount / item.get_expiry()
        for item in parse_many(rate_limit)
        if item.get_expiry() <= SUSTAINED_WINDOW_MAX_S
    ]
    return min(rates) if rates else None


class LockedObserver:
    """A ``CallObserver`` that several threads may report to at once."""

    def __init__(self, inner: CallObserver) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def on_call(self, operation: str, status: int | None, duration_s: float) -> None:
        with self._lock:
            self.inner.on_call(operation, status, duration_s)

    def on_token_refresh(self) -> None:
        with self._lock:
            self.inner.on_token_refresh()


def thread_safe(deps: AdapterDeps) -> AdapterDeps:
    """``deps`` with its observer behind a lock (the gates and Redis are thread-safe already)."""
    if isinstance(deps.observer, LockedObserver):
        return deps
    return replace(deps, observer=LockedObserver(deps.observer))


class RecordPool:
    """Runs one function over a batch's records, at most ``size`` at a time, outcomes in order."""

    def __init__(self, size: int, name: str) -> None:
        self.size = max(1, size)
        self.name = name
        self._executor: ThreadPoolExecutor | None = None
        self._pid: int | None = None
        self._lock = threading.Lock()

    def map(self, work: DeliverOne, records: Sequence[DeliveryRecord]) -> list[Outcome]:
        if self.size == 1 or len(records) <= 1:
            return [_guarded(work, record) for record in records]
        executor = self._get_executor()
        futures = [
            # One context copy per record: a Context cannot be entered by two threads at once.
            executor.submit(contextvars.copy_context().run, _guarded, work, record)
            for record in records
        ]
        return [future.result() for future in futures]

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None and self._pid == os.getpid():
            executor.shutdown(wait=True)

    def _get_executor(self) -> ThreadPoolExecutor:
        with self._lock:
            # A pool inherited through a fork has no threads in the child: build a new one.
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(
                    max_workers=self.size, thread_name_prefix=f"{self.name}-call"
                )
                self._pid = os.getpid()
            return self._executor


def _guarded(work: DeliverOne, record: DeliveryRecord) -> Outcome:
    try:
        return work(record)
    except Exception as exc:  # an adapter bug must not take the batch's other outcomes with it
        log.exception("delivering one record raised instead of returning an outcome")
        return Outcome.retry(ADAPTER_ERROR, f"{type(exc).__name__}: {exc}")


class OneRecordConnection(ConnectionBase):
    """A connection of a provider with one contact per call (Constant Contact contacts, easy.tools)."""

    #: One contact per call: this many calls of a batch in flight at once (each takes its turn
    #: from the shared ``rate_limit``). A batch is ``3 * parallel_calls`` records unless ``batch_size``
    #: says otherwise or the rate limit cuts it (see :func:`one_record_batch_size`).
    parallel_calls: int = Field(default=8, ge=1, le=32)


class OneRecordHttpAdapter(HttpAdapter, ABC):
    """An HTTP adapter for a provider with one contact per call (Constant Contact contacts,
    easy.tools): its batches are worked ``parallel_calls`` records at a time on a :class:`RecordPool`,
    every record delivered account-wide. Subclasses implement ``_deliver_one``.
    """

    def __init__(
        self,
        conn: OneRecordConnection,
        deps: AdapterDeps,
        *,
        headers: Mapping[str, str],
        secrets: Sequence[str],
    ) -> None:
        # A batch's records are worked by up to parallel_calls threads: the observer must be shared safely.
        super().__init__(conn, thread_safe(deps), headers=headers, secrets=secrets)
        self.parallel_calls = conn.parallel_calls
        self.pool = RecordPool(conn.parallel_calls, conn.name)

    @property
    def max_batch_size(self) -> int:
        """Records a batch carries: still one contact per call, ``parallel_calls`` calls at a time."""
        conn = self.connection
        return one_record_batch_size(self.parallel_calls, conn.batch_size, conn.rate_limit, conn.max_parallel)

    def close(self) -> None:
        self.pool.close()
        super().close()

    def batch_key(self, record: DeliveryRecord) -> Hashable:
        return record.target

    def precheck(self, record: DeliveryRecord) -> Outcome | None:
        return None  # every target is delivered account-wide: the provider has no other opt-out

    def deliver(self, batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        return self.pool.map(self._deliver_one, batch)

    @abstractmethod
    def _deliver_one(self, record: DeliveryRecord) -> Outcome:
        """One record's calls and its outcome (each subclass's own provider logic)."""

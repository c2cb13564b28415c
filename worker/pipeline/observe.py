"""Provider-call observations (counts, latency and batch-size histograms), kept in Redis.

Adapters report each call to a :class:`CallRecorder`; the pipeline flushes it into the same
transaction that records the batch's outcomes, so the numbers every process reports add up.
Histograms are stored as per-bucket counts (not cumulative) plus sum and count, one hash each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from worker import keys
from worker.pipeline.counters import Counter, incr

LATENCY_HISTOGRAM: Final = "provider_call_seconds"
LATENCY_BUCKETS_S: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_HISTOGRAM: Final = "batch_size"
BATCH_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
INF_BUCKET: Final = "+Inf"


def bucket_for(value: float, buckets: tuple[float, ...]) -> str:
    for bound in buckets:
        if value <= bound:
            return str(bound)
    return INF_BUCKET


def observe(pipe: Any, connection: str, name: str, value: float, buckets: tuple[float, ...]) -> None:
    key = keys.histogram(connection, name)
    pipe.hincrby(key, bucket_for(value, buckets), 1)
    pipe.hincrbyfloat(key, "sum", value)
    pipe.hincrby(key, "count", 1)


@dataclass
class CallRecorder:
    """Implements ``CallObserver``: remembers calls until they are flushed to Redis."""

    calls: int = 0
    token_refreshes: int = 0
    throttled: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def on_call(self, operation: str, status: int | None, duration_s: float) -> None:
        self.calls += 1
        self.latencies_s.append(duration_s)
        if status == 429:
            self.throttled += 1

    def on_token_refresh(self) -> None:
        self.token_refreshes += 1

    def flush(self, pipe: Any, connection: str) -> int:
        """Queue everything observed so far; returns the number of calls flushed."""
        calls = self.calls
        incr(pipe, connection, Counter.CALLS, self.calls)
        incr(pipe, connection, Counter.TOKEN_REFRESHES, self.token_refreshes)
        incr(pipe, connection, Counter.THROTTLED, self.throttled)
        for latency in self.latencies_s:
            observe(pipe, connection, LATENCY_HISTOGRAM, latency, LATENCY_BUCKETS_S)
        self.calls = self.token_refreshes = self.throttled = 0
        self.latencies_s.clear()
        return calls

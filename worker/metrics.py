"""Prometheus metrics, read from Redis at scrape time.

Every worker process writes its counts and histogram buckets to Redis (in the same transactions as
the outcomes they count), so one exporter reading Redis is correct for any number of worker
processes and pods, and reports the same numbers as ``unsub stats``. Run it with ``unsub metrics``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Final

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from worker import keys, providers
from worker.pipeline import stats
from worker.pipeline.counters import Counter
from worker.pipeline.observe import (
    BATCH_BUCKETS,
    BATCH_HISTOGRAM,
    INF_BUCKET,
    LATENCY_BUCKETS_S,
    LATENCY_HISTOGRAM,
)
from worker.redis_client import text_map
from worker.settings import Settings

PREFIX: Final = "unsub"
#: Per-connection counters reported as ``unsub_records{outcome=...}``: what became of records.
OUTCOMES: Final = (
    Counter.DELIVERED,
    Counter.RETRIED,
    Counter.DEAD,
    Counter.HELD,
    Counter.RATE_LIMITED,
    Counter.HANDED_BACK,
)
#: Every other per-connection counter: its metric name (after the prefix) and help text. With
#: :data:`OUTCOMES` this covers every counter `unsub stats` can show (a test holds them together).
COUNTERS: Final = {
    Counter.CALLS: ("provider_calls", "Provider API calls."),
    Counter.THROTTLED: ("provider_throttled", "429 answers."),
    Counter.BATCHES: ("batches", "Provider batches delivered."),
    Counter.TOKEN_REFRESHES: ("token_refreshes", "Access tokens obtained."),
    Counter.REPLAYED: ("replayed_records", "Dead letters replayed into the buffer."),
    Counter.BREAKER_OPENED: ("breaker_opened", "Times the circuit breaker opened (re-openings included)."),
}
#: Prefix of the per-connection, per-reason dead-letter counters (``dead:<reason>``).
DEAD_PREFIX: Final = "dead:"


class RedisCollector(Collector):
    """Builds every metric from one Redis snapshot per scrape."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    def collect(self) -> Iterator[Metric]:
        snapshot = stats.collect(self._client, self._settings)
        yield from self._connection_metrics(snapshot)
        yield from self._dead_letter_metrics(snapshot)
        yield from self._intake_metrics(snapshot)
        yield from self._queue_metrics()
        yield self._histogram(LATENCY_HISTOGRAM, "Provider call latency.", LATENCY_BUCKETS_S, snapshot)
        yield self._histogram(BATCH_HISTOGRAM, "Records per provider batch.", BATCH_BUCKETS, snapshot)

    def _connection_metrics(self, snapshot: stats.Snapshot) -> Iterator[Metric]:
        yield from self._counter_metrics(snapshot)
        pending = GaugeMetricFamily(
            f"{PREFIX}_pending_records", "Records in the buffer.", labels=["connection"]
        )
        waiting = GaugeMetricFamily(
            f"{PREFIX}_waiting_retries", "Records waiting for a retry or the breaker.", labels=["connection"]
        )
        oldest = GaugeMetricFamily(
            f"{PREFIX}_oldest_pending_age_seconds",
            "Age of the oldest record in the buffer (the compliance clock).",
            labels=["connection"],
        )
        breaker = GaugeMetricFamily(
            f"{PREFIX}_breaker_open", "1 while the circuit is open.", labels=["connection"]
        )
        for c in snapshot.connections:
            pending.add_metric([c.name], c.pending)
            waiting.add_metric([c.name], c.waiting_retries)
            oldest.add_metric([c.name], c.oldest_pending_age_s or 0.0)
            breaker.add_metric([c.name], 1.0 if c.breaker == "open" else 0.0)
        yield from (pending, waiting, oldest, breaker)

    def _counter_metrics(self, snapshot: stats.Snapshot) -> Iterator[Metric]:
        """Every per-connection counter, the same numbers `unsub stats` lists."""
        records = CounterMetricFamily(
            f"{PREFIX}_records", "Records per connection by outcome.", labels=["connection", "outcome"]
        )
        dead = CounterMetricFamily(
            f"{PREFIX}_connection_dead_lettered",
            "Records dead-lettered per connection since the start, by reason.",
            labels=["connection", "reason"],
        )
        others = {
            counter: CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["connection"])
            for counter, (name, doc) in COUNTERS.items()
        }
        for c in snapshot.connections:
            for outcome in OUTCOMES:
                records.add_metric([c.name, outcome.value], c.counters.get(outcome, 0))
            for counter, family in others.items():
                family.add_metric([c.name], c.counters.get(counter, 0))
            for name, value in sorted(c.counters.items()):
                if name.startswith(DEAD_PREFIX):
                    dead.add_metric([c.name, name.removeprefix(DEAD_PREFIX)], value)
        yield from (records, dead, *others.values())

    def _dead_letter_metrics(self, snapshot: stats.Snapshot) -> Iterator[Metric]:
        now = GaugeMetricFamily(f"{PREFIX}_dead_letters", "Dead letters in the store now.", labels=["reason"])
        for reason, count in snapshot.dead_letters_by_reason.items():
            now.add_metric([reason], count)
        total = CounterMetricFamily(
            f"{PREFIX}_dead_lettered", "Records dead-lettered since the start, by reason.", labels=["reason"]
        )
        for reason, count in snapshot.dead_letters_total_by_reason.items():
            total.add_metric([reason], count)
        yield from (now, total)

    def _intake_metrics(self, snapshot: stats.Snapshot) -> Iterator[Metric]:
        intake = CounterMetricFamily(f"{PREFIX}_intake", "Intake counts by result.", labels=["result"])
        for name, value in sorted(snapshot.intake.items()):
            intake.add_metric([name], value)
        yield intake

    def _queue_metrics(self) -> Iterator[Metric]:
        queued = GaugeMetricFamily(
            f"{PREFIX}_queue_length", "Celery messages waiting per queue.", labels=["queue"]
        )
        pipe = self._client.pipeline(transaction=False)
        queues = providers.declared_queues()
        for queue in queues:
            pipe.llen(queue)
        for queue, length in zip(queues, pipe.execute(), strict=True):
            queued.add_metric([queue], int(length))
        beat = GaugeMetricFamily(
            f"{PREFIX}_scheduler_heartbeat_age_seconds", "Seconds since the scheduler's last tick (-1: none)."
        )
        last = self._client.get(keys.SCHEDULER_HEARTBEAT)
        beat.add_metric([], time.time() - float(last) if last is not None else -1.0)
        yield from (queued, beat)

    def _histogram(
        self, name: str, documentation: str, bounds: tuple[float, ...], snapshot: stats.Snapshot
    ) -> HistogramMetricFamily:
        family = HistogramMetricFamily(f"{PREFIX}_{name}", documentation, labels=["connection"])
        for c in snapshot.connections:
            raw = text_map(self._client.hgetall(keys.histogram(c.name, name)))
            cumulative, buckets = 0, []
            for bound in bounds:
                cumulative += int(raw.get(str(bound), 0))
                buckets.append((str(bound), float(cumulative)))
            cumulative += int(raw.get(INF_BUCKET, 0))
            buckets.append((INF_BUCKET, float(cumulative)))
            family.add_metric([c.name], buckets, float(raw.get("sum", 0.0)))
        return family


def registry_for(client: redis.Redis, settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RedisCollector(client, settings))
    return registry

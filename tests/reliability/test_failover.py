"""Scenario: the Redis primary is SIGKILLed under load and Sentinel promotes its replica.

The test starts a primary, a replica and three Sentinels on loopback (``tests.support.sentinel``);
workers, the scheduler, `unsub metrics` and five producers use the Sentinel URL. The producers
publish 10,000 requests: four with ``replicas=1`` (a publish returns only once the replica has the
message), one with ``replicas=0`` (the default: Redis answered, nothing more). Mid-run the primary
is SIGKILLed; the Sentinels promote the replica and, as an orchestrator restarting the pod would,
the dead node comes back empty as a replica of the new primary.

Accepted means the publish returned. Every request a ``replicas=1`` publish accepted must end
delivered or dead-lettered with its reason, checked request by request. A ``replicas=0`` request
accepted in the moment before the kill may be lost (the README's "What survives what"): each one
either arrived (and then ends like the others) or is counted and printed as lost; none is missing
from the accounting. A publish that raised (Redis away, or no replica confirmed it in time) was not
accepted: such chunks are counted, reported and published again once the topology is whole.
Deliveries must resume within 30 s of the primary's death (issue 15); the time to the promotion
and to the first delivery recorded on the new primary is printed. The exporter, started before
the kill, must answer after it with the new primary's numbers, without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from producer.client import Producer
from producer.errors import PublishError
from tests.reliability.conftest import assert_none_lost, wait_finished
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.sentinel import MASTER_NAME, SentinelTopology
from tests.support.stacks import StackFactory, only_connections
from tests.support.waiting import wait_for
from unsub_dev.localstack.processes import ManagedProcess
from unsub_dev.localstack.redis_server import free_port
from unsub_dev.localstack.stack import LocalStack
from worker import keys
from worker.pipeline import stats, status

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(360)]

REQUESTS = 10_000
#: Producers waiting for one replica per publish, and one that does not wait (the default).
PRODUCERS_REPLICAS = (1, 1, 1, 1, 0)
CHUNK = 100
#: Pause between one producer's chunks: publishing spans the failover (about 12 s in all).
CHUNK_PAUSE_S = 0.4
CONNECTIONS = ("cc-partner", "insider")
#: Accepted requests before the kill: a third of the run, so publishing and delivery go on across it.
KILL_AFTER = REQUESTS // 3
#: Messages and records without an outcome when the primary dies: the kill lands on work in flight.
MIN_IN_FLIGHT = 50
#: Issue 15: deliveries resume within 30 s of the primary's death.
RESUME_LIMIT_S = 30.0


@dataclass
class Publishing:
    """What the producers did: ids whose publish returned, chunks whose publish raised."""

    replicas: int
    accepted: set[str] = field(default_factory=set)
    refused: list[list[dict[str, str]]] = field(default_factory=list)
    failures: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, stack: LocalStack, chunks: list[list[dict[str, str]]]) -> None:
        try:
            with stack.producer(replicas=self.replicas, replica_timeout_s=1.0) as producer:
                for chunk in chunks:
                    self._publish(producer, chunk)
                    time.sleep(CHUNK_PAUSE_S)
        except BaseException as exc:  # reported by the test thread
            self.failures.append(exc)

    def _publish(self, producer: Producer, chunk: list[dict[str, str]]) -> None:
        try:
            ids = producer.publish_many(chunk)
        except PublishError:
            with self.lock:
                self.refused.append(chunk)
            return
        with self.lock:
            self.accepted.update(ids)

    def publish_refused(self, stack: LocalStack) -> int:
        """Publish the refused chunks again (the topology is whole); how many requests they held."""
        with stack.producer(replicas=self.replicas) as producer:
            for chunk in self.refused:
                self.accepted.update(producer.publish_many(chunk))
        return sum(len(chunk) for chunk in self.refused)


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[SentinelTopology]:
    with SentinelTopology(tmp_path / "sentinel", replicas=1, sentinels=3) as topo:
        yield topo


def time_to_kill(stack: LocalStack, publishing: list[Publishing]) -> int:
    """Intake messages not taken in plus records without an outcome, once a third of the run is
    accepted and at least :data:`MIN_IN_FLIGHT` are unfinished; else 0 (not yet)."""
    if sum(len(p.accepted) for p in publishing) < KILL_AFTER:
        return 0
    snap = stack.snapshot()
    busy = stack.queued_messages() + sum(c.pending + c.waiting_retries for c in snap.connections)
    return busy if busy >= MIN_IN_FLIGHT else 0


def delivered_on(topo: SentinelTopology, port: int, stack: LocalStack) -> int:
    """Delivered records the node at ``port`` has counted (0 while it does not answer)."""
    try:
        snapshot = stats.collect(topo.client(port), stack.settings)
    except redis.RedisError:
        return 0
    return sum(c.counters.get("delivered", 0) for c in snapshot.connections)


def start_exporter(stack: LocalStack) -> tuple[ManagedProcess, int]:
    """`unsub metrics` on the stack's (Sentinel) configuration, stopped with the stack."""
    port = free_port()
    proc = ManagedProcess(
        name="metrics",
        args=["metrics", "--config", str(stack.config_path), "--port", str(port)],
        log_path=stack.workdir / "metrics.log",
        ready=lambda: scraped_delivered(port) is not None,
    )
    stack.processes["metrics"] = proc
    return proc.start(), port


def scraped_delivered(port: int) -> int | None:
    """Delivered records over every connection, as the exporter reports them (None: no answer)."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    except httpx.HTTPError:
        return None
    return int(
        sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "unsub_records_total" and s.labels.get("outcome") == "delivered"
        )
    )


def arrived(client: redis.Redis, request_ids: set[str]) -> set[str]:
    """The request ids intake took in (their status exists)."""
    ordered = sorted(request_ids)
    pipe = client.pipeline(transaction=False)
    for rid in ordered:
        pipe.hexists(keys.request_status(rid), status.META_FIELD)
    return {rid for rid, seen in zip(ordered, pipe.execute(), strict=True) if seen}


def test_a_sentinel_failover_under_load_loses_no_accepted_request(
    topology: SentinelTopology, rstack: StackFactory, sandbox: SandboxClient
) -> None:  # the topology first: it must outlive the stack, whose workers stop on it
    stack = rstack(
        redis_url=topology.url,
        settings_overrides={"sentinel_master": MASTER_NAME},
        config_hook=only_connections(*CONNECTIONS),
    )
    workers = [stack.start_worker(name, concurrency=2) for name in ("w1", "w2")]
    scheduler = stack.start_scheduler()
    exporter, metrics_port = start_exporter(stack)
    emails = {f"failover-{i}": f"failover{i}@example.com" for i in range(REQUESTS)}
    requests = [{"request_id": rid, "email": email} for rid, email in emails.items()]
    chunks = [requests[i : i + CHUNK] for i in range(0, REQUESTS, CHUNK)]
    strict, plain = Publishing(replicas=1), Publishing(replicas=0)
    count = len(PRODUCERS_REPLICAS)
    producers = [
        threading.Thread(
            target=(strict if replicas else plain).run, args=(stack, chunks[p::count]), name=f"producer-{p}"
        )
        for p, replicas in enumerate(PRODUCERS_REPLICAS)
    ]
    for thread in producers:
        thread.start()
    in_flight = wait_for(
        lambda: time_to_kill(stack, [strict, plain]),
        timeout_s=60,
        interval_s=0.02,
        message=f"{KILL_AFTER} requests accepted and {MIN_IN_FLIGHT} unfinished before the kill",
    )
    killed_at = time.monotonic()
    old = topology.kill_primary()
    new = topology.wait_promoted(old)
    promoted_s = time.monotonic() - killed_at
    recorded = delivered_on(topology, new, stack)
    wait_for(
        lambda: delivered_on(topology, new, stack) > recorded,
        timeout_s=RESUME_LIMIT_S - (time.monotonic() - killed_at),
        interval_s=0.1,
        message="deliveries recorded on the new primary",
    )
    resumed_s = time.monotonic() - killed_at
    resumed_count = delivered_on(topology, new, stack)
    wait_for(
        lambda: (scraped_delivered(metrics_port) or 0) >= resumed_count,
        timeout_s=30,
        message="the exporter reporting the new primary's deliveries",
    )
    topology.restart_as_replica(old)
    for thread in producers:
        thread.join(timeout=120)
    assert not strict.failures + plain.failures, f"publishing failed: {strict.failures + plain.failures!r}"
    refused = strict.publish_refused(stack) + plain.publish_refused(stack)
    print(
        f"sentinel failover: killed the primary with {in_flight} messages/records unfinished; promoted "
        f"after {promoted_s:.1f}s, deliveries resumed {resumed_s:.1f}s after the kill; {refused} "
        f"requests in {len(strict.refused) + len(plain.refused)} refused publishes, published again"
    )

    wait_finished(stack, strict.accepted, timeout_s=180)

    assert all(w.running for w in workers), "workers follow the failover without a restart"
    assert scheduler.running, "the scheduler follows the failover without a restart"
    assert exporter.running, "the exporter follows the failover without a restart"
    assert strict.accepted | plain.accepted == set(emails)
    plain_arrived = arrived(stack.redis, plain.accepted)
    plain_lost = plain.accepted - plain_arrived
    print(
        f"sentinel failover: replicas=0 lost {len(plain_lost)} of {len(plain.accepted)} accepted "
        f"requests (first {sorted(plain_lost)[:5]}); replicas=1 lost none of {len(strict.accepted)}"
    )
    kept = {rid: emails[rid] for rid in strict.accepted | plain_arrived}
    outcomes = assert_none_lost(stack, sandbox, kept, CONNECTIONS, allow_dead=True)
    assert len(kept) + len(plain_lost) == len(emails), "every request arrived or is counted as lost"
    print(
        f"sentinel failover: outcomes {dict(outcomes.states)}, dead letters {list(outcomes.dead.items())[:5]}"
    )
    assert set(outcomes.states) <= {"delivered", "dead_lettered"}
    counted = sum(c.counters.get("delivered", 0) for c in stack.snapshot().connections)
    assert scraped_delivered(metrics_port) == counted

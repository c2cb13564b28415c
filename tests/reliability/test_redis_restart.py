"""Scenario 2: the Redis server restarts in the middle of a run.

The stack runs on a Redis of the test's own with ``appendonly yes`` and ``appendfsync always``.
While a producer publishes and two workers deliver, Redis is shut down (SIGTERM) and started again
on the same port with the same directory. Workers, scheduler and the producer must reconnect by
themselves. A chunk whose publish raised was not accepted: it is published again after the restart
(same request ids); every request whose publish returned must end delivered.
"""

from __future__ import annotations

import threading
import time

import pytest
import redis

from producer.errors import PublishError
from tests.reliability.conftest import PersistentRedis, assert_none_lost, wait_finished
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, only_connections
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(240)]

REQUESTS = 6000
CHUNK = 100
OUTAGE_S = 3.0
CONNECTIONS = ("cc-partner", "insider")


def _redis_up(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_a_redis_restart_mid_run_loses_no_accepted_request(
    rstack: StackFactory, sandbox: SandboxClient, own_redis: PersistentRedis
) -> None:
    stack = rstack(redis_url=own_redis.url, config_hook=only_connections(*CONNECTIONS))
    workers = [stack.start_worker(name, concurrency=2) for name in ("w1", "w2")]
    scheduler = stack.start_scheduler()
    emails = {f"restart-{i}": f"restart{i}@example.com" for i in range(REQUESTS)}
    requests = [{"request_id": rid, "email": email} for rid, email in emails.items()]
    chunks = [requests[i : i + CHUNK] for i in range(0, REQUESTS, CHUNK)]

    accepted: set[str] = set()
    refused: list[list[dict[str, str]]] = []
    publishing_done = threading.Event()

    def publish() -> None:
        with stack.producer(retry_policy={"max_retries": 1, "interval_start": 0.2}) as producer:
            for chunk in chunks:
                try:
                    accepted.update(producer.publish_many(chunk))
                except PublishError:
                    refused.append(chunk)
                time.sleep(0.01)  # a steady offered load, so publishing spans the outage
        publishing_done.set()

    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    wait_for(
        lambda: sum(c.counters.get("delivered", 0) for c in stack.snapshot().connections) > 0,
        timeout_s=60,
        message="the first deliveries before the restart",
    )
    own_redis.stop()
    time.sleep(OUTAGE_S)  # the outage itself: nothing is asserted on time
    own_redis.start()
    publisher.join(timeout=120)
    assert publishing_done.is_set()
    wait_for(lambda: _redis_up(stack.redis), timeout_s=30, message="the stack's client to reconnect")

    with stack.producer() as producer:
        for chunk in refused:
            accepted.update(producer.publish_many(chunk))
    print(f"redis restart: {len(refused)} chunks refused during the outage and published again")

    wait_finished(stack, accepted, timeout_s=60)
    assert all(w.running for w in workers), "workers survive a Redis restart"
    assert scheduler.running, "the scheduler survives a Redis restart"
    assert accepted == set(emails)
    outcomes = assert_none_lost(stack, sandbox, emails, CONNECTIONS)
    assert outcomes.states == {"delivered": REQUESTS * len(CONNECTIONS)}

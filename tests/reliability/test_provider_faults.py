"""Scenarios 3 and 4: a provider outage longer than several backoff steps, and JWT expiry mid-run.

Timings are the fast local ones (``unsub_dev/localstack/config.py``): retries back off from 0.25 s to a
2 s cap and the breaker cools down for 1-3 s, so an 8 s outage spans several backoff steps and
several breaker probes.
"""

from __future__ import annotations

import threading

import pytest

from tests.reliability.conftest import assert_none_lost, wait_finished
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, chain, only_connections, set_connection
from tests.support.waiting import wait_for
from unsub_dev.localstack.config import FAST_RETRY

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(240)]

OUTAGE_S = 8.0
REQUESTS = 800


def test_a_provider_outage_longer_than_several_backoff_steps_ends_with_everything_delivered(
    rstack: StackFactory, sandbox: SandboxClient
) -> None:
    assert 3 * FAST_RETRY["cap_s"] < OUTAGE_S, "the outage must outlast several backoff steps"
    stack = rstack(
        config_hook=chain(only_connections("insider", "cc-partner"), set_connection("insider", batch_size=50))
    )
    stack.start_worker("w1", concurrency=2)
    stack.start_scheduler()
    sandbox.faults(insider={"outage_for_s": OUTAGE_S, "outage_status": 503})
    emails = {f"outage-{i}": f"outage{i}@example.com" for i in range(1000)}
    with stack.producer() as producer:
        producer.publish_many({"request_id": rid, "email": e} for rid, e in emails.items())

    wait_finished(stack, emails, timeout_s=120)

    outcomes = assert_none_lost(stack, sandbox, emails, ["cc-partner", "insider"])
    assert outcomes.states == {"delivered": 2000}
    insider = sandbox.state("insider")
    assert insider["rejected"]["unsubscribe"]["503"] >= 3, "the outage was met more than once"
    stats = {c.name: c for c in stack.snapshot().connections}["insider"]
    assert stats.counters.get("retried", 0) + stats.counters.get("held", 0) > 0
    assert stats.counters.get("delivered") == 1000
    assert stats.dead_letters_now == 0


def test_a_jwt_expiring_mid_run_costs_exactly_one_token_request_across_four_worker_processes(
    rstack: StackFactory, sandbox: SandboxClient
) -> None:
    stack = rstack(
        config_hook=chain(only_connections("cc-partner"), set_connection("cc-partner", batch_size=8))
    )
    stack.start_worker("w1", concurrency=2)
    stack.start_worker("w2", concurrency=2)
    stack.start_scheduler()
    sandbox.faults(cc_partner={"latency_ms": 20})
    emails = {f"jwt-{i}": f"jwt{i}@example.com" for i in range(REQUESTS)}
    expiries = 0

    def calls() -> int:
        return int(sandbox.state("cc_partner")["requests"].get("unsubscribe", 0))

    def publish() -> None:
        with stack.producer() as producer:
            producer.publish_many({"request_id": r, "email": e} for r, e in emails.items())

    publisher = threading.Thread(target=publish, name="publisher")
    publisher.start()
    for threshold in (15, 45):
        wait_for(lambda t=threshold: calls() >= t, timeout_s=60, message=f"{threshold} unsubscribe calls")
        before = sandbox.state("cc_partner")["token_requests"]
        assert sandbox.expire_tokens("cc_partner")
        expiries += 1
        # the next calls meet a 401 in several processes at once; one of them renews the token
        so_far = calls()
        wait_for(
            lambda s=so_far: calls() >= s + 15, timeout_s=60, message="deliveries to go on after the expiry"
        )
        assert sandbox.state("cc_partner")["token_requests"] == before + 1
    publisher.join(timeout=60)
    wait_finished(stack, emails, timeout_s=120)

    state = sandbox.state("cc_partner")
    assert state["token_requests"] == 1 + expiries, "one token request at start, then one per expiry"
    assert state["rejected"]["unsubscribe"]["401"] >= expiries, "the expiries were really met mid-run"
    outcomes = assert_none_lost(stack, sandbox, emails, ["cc-partner"])
    assert outcomes.states == {"delivered": REQUESTS}

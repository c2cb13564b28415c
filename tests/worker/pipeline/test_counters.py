"""What the per-connection counters count: provider failures apart from our own waits and holds.

``retried`` counts provider failures that spent an attempt; ``rate_limited`` counts records put
back because the connection's shared rate limit was spent (no attempt spent); ``held`` counts
records the breaker or refused credentials set aside, once per record however often it is held
again while it waits (issue 14: 200,000 re-holds of 50,000 records read as failures).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import httpx

from tests.support.intake import take_in
from tests.support.pipeline_harness import WHATCOUNTS, PipelineHarness
from worker import keys
from worker.adapters.base import Outcome
from worker.adapters.http import Caller
from worker.pipeline import counters, retry
from worker.pipeline.breaker import State
from worker.pipeline.delivery import drain
from worker.records import DeliveryRecord

#: The connection's limit: two calls a minute, one spent by "another worker" before the drain.
LIMIT: str = "2/minute"


def publish(harness: PipelineHarness, *emails: str) -> None:
    payload = [{"email": e, "request_id": f"r-{e}", "connections": ["wc"]} for e in emails]
    take_in(harness.rt, payload, origin=f"t-{time.monotonic()}")


def through_the_gate(harness: PipelineHarness) -> Callable[[Sequence[DeliveryRecord]], list[Outcome]]:
    """A script that sends each record through the real ``Caller`` (and so the connection's shared
    Redis gate) to a transport that would accept it."""
    adapter = harness.adapter("wc")
    client = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, text="ok")))
    caller = Caller(client, adapter.deps, provider="whatcounts", scrub=lambda text: text)

    def script(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        replies = [caller.send("unsubscribe", httpx.Request("POST", "http://wc.test/")) for _ in batch]
        return [r if isinstance(r, Outcome) else Outcome.delivered(status=r.status) for r in replies]

    return script


def waiting_records(harness: PipelineHarness) -> list[DeliveryRecord]:
    return [DeliveryRecord.model_validate_json(m) for m in harness.redis.zrange(keys.retry_zset("wc"), 0, -1)]


def test_a_wait_on_a_spent_rate_limit_counts_rate_limited_and_leaves_retried_alone(
    make_harness: Callable[..., PipelineHarness],
) -> None:
    harness = make_harness([{**WHATCOUNTS, "rate_limit": LIMIT}])
    harness.rt.gate(harness.rt.settings.connection("wc")).acquire()  # another worker's call
    harness.adapter("wc").script = through_the_gate(harness)
    publish(harness, "a@example.com", "b@example.com", "c@example.com")  # one batch of three

    report = drain(harness.rt, "wc")  # the minute's last turn goes to the first record's call

    found = counters.read_connection(harness.redis, "wc")
    assert (found["delivered"], found["rate_limited"], found.get("retried", 0)) == (1, 2, 0)
    assert (report.delivered, report.rate_limited, report.retried) == (1, 2, 0)
    waiting = waiting_records(harness)
    assert [r.attempts for r in waiting] == [0, 0]
    assert all((r.last_error or "").startswith("rate_limited: ") for r in waiting)


def test_a_record_held_again_and_again_by_an_open_breaker_counts_held_once(
    harness: PipelineHarness,
) -> None:
    breaker = harness.rt.breaker(harness.rt.settings.connection("wc"))
    harness.adapter("wc").script = lambda batch: [Outcome.reauth("refused") for _ in batch]
    publish(harness, "a@example.com", "b@example.com")
    drain(harness.rt, "wc")  # refused credentials: the breaker opens, both records are set aside
    assert breaker.read().state is State.OPEN

    for _ in range(3):  # each time they come due, the connection is still held: set aside again
        retry.promote_due(harness.redis, "wc", now=time.time() + 10_000)
        harness.redis.hset(keys.breaker("wc"), "open_until", time.time() - 1)
        drain(harness.rt, "wc")

    found = counters.read_connection(harness.redis, "wc")
    assert found["held"] == 2
    assert found.get("retried", 0) == 0
    assert len(harness.adapter("wc").calls) == 4
    assert {r.held_since is not None for r in waiting_records(harness)} == {True}

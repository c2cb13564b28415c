"""A drain never sits waiting for a rate-limit turn: when the connection's next turn is not now it
ends, leaves the records for later and arms one delayed trigger for when the turn comes (so a
rate-limited backlog never occupies a worker process another connection could use)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from producer import names
from tests.support.intake import take_in
from tests.support.pipeline_harness import WHATCOUNTS, PipelineHarness
from worker import keys
from worker.adapters.base import Outcome
from worker.pipeline import buffer, delivery, ratelimit, status, streams, trigger
from worker.pipeline.delivery import drain
from worker.pipeline.status import DeliveryState
from worker.records import DeliveryRecord

Send = tuple[str, list[object], str, float | None]
#: One turn a minute: once it is taken, the next is about a minute away.
ONE_A_MINUTE = "1/minute"


@pytest.fixture
def limited(make_harness: Callable[..., PipelineHarness]) -> PipelineHarness:
    """One WhatCounts connection allowed one call a minute."""
    return make_harness(connections=[{**WHATCOUNTS, "rate_limit": ONE_A_MINUTE}])


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rate limit's only way to wait is a sleep: here it fails the test instead."""

    def sleep(seconds: float) -> None:
        raise AssertionError(f"the drain waited {seconds:.1f}s for a rate-limit turn")

    monkeypatch.setattr(ratelimit.time, "sleep", sleep)


def sends_of(harness: PipelineHarness) -> list[Send]:
    """Every task the runtime queues from now on, with its countdown."""
    sends: list[Send] = []

    def send(name: str, args: list[object], queue: str, *, countdown: float | None = None) -> None:
        sends.append((name, args, queue, countdown))

    harness.rt.send_task = send
    return sends


def publish(harness: PipelineHarness, n: int) -> list[str]:
    ids = [f"r{i}" for i in range(n)]
    payload = [
        {"email": f"p{i}@example.com", "request_id": r, "connections": ["wc"]} for i, r in enumerate(ids)
    ]
    take_in(harness.rt, payload)
    return ids


def claimed(harness: PipelineHarness) -> list[dict[str, object]]:
    stream = keys.buffer_stream("wc")
    return streams.pending_of(harness.redis, stream, keys.BUFFER_GROUP, None, min_idle_s=0, count=100)


def take_the_turn(harness: PipelineHarness) -> None:
    harness.rt.gate(harness.rt.settings.connection("wc")).acquire()


def states(harness: PipelineHarness, ids: Sequence[str]) -> list[tuple[DeliveryState, str | None]]:
    found = [status.read(harness.redis, rid) for rid in ids]
    return [(s.deliveries[0].state, s.deliveries[0].reason) for s in found if s is not None]


DELAYED_TRIGGER: Send = (
    trigger.DELIVER_TASK,
    ["wc"],
    names.delivery_queue("whatcounts"),
    trigger.MAX_LATER_S,
)


def test_a_drain_that_finds_no_turn_ends_leaves_the_records_and_arms_one_delayed_trigger(
    limited: PipelineHarness,
) -> None:
    ids = publish(limited, 5)
    take_the_turn(limited)
    sends = sends_of(limited)

    report = drain(limited.rt, "wc")

    assert report.paused_for_rate_limit_s is not None
    assert report.paused_for_rate_limit_s > trigger.MAX_LATER_S  # about a minute away
    assert (report.batches, report.provider_calls, limited.adapter("wc").calls) == (0, 0, [])
    assert buffer.backlog(limited.redis, "wc") == 5
    assert claimed(limited) == []  # nothing was even claimed
    assert states(limited, ids) == [(DeliveryState.PENDING, None)] * 5
    assert sends == [DELAYED_TRIGGER]  # a turn further than the longest delay: at that delay
    assert limited.redis.get(keys.trigger("wc")) == "quiet"
    assert 0 < limited.redis.pttl(keys.trigger("wc")) <= delivery.MAX_QUIET_S * 1000


def test_drains_that_find_the_same_wait_arm_only_one_delayed_trigger(limited: PipelineHarness) -> None:
    publish(limited, 2)
    take_the_turn(limited)
    sends = sends_of(limited)

    reports = [drain(limited.rt, "wc") for _ in range(3)]

    assert all(r.paused_for_rate_limit_s for r in reports)
    assert sends == [DELAYED_TRIGGER]


def test_a_quiet_connection_gets_no_immediate_trigger_until_its_turn(limited: PipelineHarness) -> None:
    publish(limited, 1)
    take_the_turn(limited)
    drain(limited.rt, "wc")
    sends = sends_of(limited)

    sent = trigger.maybe_trigger(limited.rt, limited.rt.settings.connection("wc"))

    assert (sent, sends) == (False, [])


def test_a_drain_whose_turns_run_out_between_batches_hands_the_rest_back_for_later(
    limited: PipelineHarness,
) -> None:
    gate = limited.rt.gate(limited.rt.settings.connection("wc"))

    def one_turn_per_batch(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        gate.acquire()  # what a real adapter does before its call
        return [Outcome.delivered(status=200) for _ in batch]

    limited.adapter("wc").script = one_turn_per_batch
    ids = publish(limited, 6)  # two batches of three (max_batch_size)
    sends = sends_of(limited)

    report = drain(limited.rt, "wc")

    assert (report.batches, report.delivered, report.handed_back) == (1, 3, 3)
    assert report.paused_for_rate_limit_s is not None
    assert (
        states(limited, ids)
        == [(DeliveryState.DELIVERED, None)] * 3 + [(DeliveryState.RETRYING, "handed_back")] * 3
    )
    assert buffer.backlog(limited.redis, "wc") == 0  # the rest wait in the retry set, due now
    assert limited.redis.zcard(keys.retry_zset("wc")) == 3
    assert sends == [DELAYED_TRIGGER]

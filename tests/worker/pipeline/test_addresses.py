"""The per-address hash keeps the newest request ids only (``worker.pipeline.addresses``)."""

from __future__ import annotations

import pytest
import redis

from tests.support.pipeline_harness import PipelineHarness
from worker import keys
from worker.pipeline import addresses
from worker.pipeline.intake import items_from_payloads, run_intake

EMAIL = "jane@example.com"
KEPT = 3


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(addresses, "REQUESTS_KEPT", KEPT)
    return KEPT


def send(harness: PipelineHarness, *request_ids: str, now: float) -> None:
    payloads = [{"email": EMAIL, "request_id": rid} for rid in request_ids]
    run_intake(harness.rt, items_from_payloads(payloads, f"task:{request_ids[0]}"), now=now)


def test_an_address_sent_again_and_again_keeps_only_its_newest_request_ids(
    harness: PipelineHarness, small_cap: int
) -> None:
    for n in range(small_cap + 4):
        send(harness, f"r{n}", now=1_000.0 + n)

    kept = addresses.request_ids(harness.redis, EMAIL)

    assert kept == ["r4", "r5", "r6"]
    assert harness.redis.ttl(keys.address(EMAIL)) > 0


def test_several_requests_for_one_address_in_one_intake_stay_within_the_cap(
    harness: PipelineHarness, small_cap: int
) -> None:
    send(harness, "a1", "a2", now=1_000.0)

    send(harness, "b1", "b2", now=2_000.0)

    assert addresses.request_ids(harness.redis, EMAIL) == ["a2", "b1", "b2"]


def test_an_address_below_the_cap_keeps_every_request_id(harness: PipelineHarness, small_cap: int) -> None:
    send(harness, "r1", now=1_000.0)
    send(harness, "r2", now=1_001.0)

    kept = addresses.request_ids(harness.redis, EMAIL)

    assert kept == ["r1", "r2"]


def test_a_trim_drops_closed_windows_and_keeps_open_ones(redis_client: redis.Redis) -> None:
    key = keys.address(EMAIL)
    redis_client.hset(
        key,
        mapping={
            "r:old": "100.000",
            "r:new": "900.000",
            addresses.window_field("wc", "global"): addresses.window_value("old", 100.0),
            addresses.window_field("ins", "list:7"): addresses.window_value("new id", 900.0),
        },
    )

    dropped = addresses.trim(
        redis_client, EMAIL, adding=addresses.REQUESTS_KEPT - 1, now=1_000.0, window_s=600
    )

    assert dropped == 2
    assert sorted(redis_client.hkeys(key)) == ["r:new", addresses.window_field("ins", "list:7")]


def test_the_intake_sees_that_an_address_must_be_trimmed_only_past_the_cap() -> None:
    at_cap = addresses.must_trim(addresses.REQUESTS_KEPT - 1, 1)
    past_cap = addresses.must_trim(addresses.REQUESTS_KEPT, 1)

    assert (at_cap, past_cap) == (False, True)

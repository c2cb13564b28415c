"""Who is dead and who takes their claims: ``liveness.dead_consumers`` and ``liveness.take_over`` on a
real Redis stream, with heartbeats that really lapse (a short lifetime, then waited out)."""

from __future__ import annotations

import pytest
import redis

from tests.support.waiting import wait_for
from worker import keys
from worker.pipeline import liveness, streams

pytestmark = pytest.mark.integration

STREAM = "test:liveness:stream"
GROUP = "test-group"
ME = "w3@host#1"
#: Heartbeat lifetime of a consumer that is about to die, and the idle time takeovers ask for here.
SHORT_TTL_S = 0.1
MIN_IDLE_S = 0.05


def holding(client: redis.Redis, consumer: str, n: int) -> list[str]:
    """``consumer`` reads ``n`` new entries and keeps them pending (as a worker that is working)."""
    for i in range(n):
        client.xadd(STREAM, {"n": f"{consumer}-{i}"})
    streams.ensure_group(client, STREAM, GROUP)
    return [c.entry_id for c in streams.read_new(client, STREAM, GROUP, consumer, n)]


def beating(client: redis.Redis, consumer: str) -> None:
    liveness.beat(client, consumer, liveness.process_token())


def lapsed(client: redis.Redis, consumer: str) -> None:
    """``consumer`` beat once and then fell silent until its heartbeat expired."""
    liveness.beat(client, consumer, liveness.process_token(), ttl_s=SHORT_TTL_S)
    wait_for(lambda: not client.exists(keys.consumer_alive(consumer)), timeout_s=10, message="heartbeat")


def owners(client: redis.Redis) -> dict[str, int]:
    summary = client.xpending(STREAM, GROUP)
    return {c["name"]: int(c["pending"]) for c in summary["consumers"] or []}


def test_a_consumer_whose_heartbeat_lapsed_while_it_held_entries_is_dead(redis_client: redis.Redis) -> None:
    holding(redis_client, "dead", 2)
    holding(redis_client, "live", 2)
    beating(redis_client, "live")
    lapsed(redis_client, "dead")

    found = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude=ME)

    assert found == ["dead"]


def test_a_silent_consumer_holding_nothing_is_dead_so_it_can_leave_the_group_and_the_caller_never_is(
    redis_client: redis.Redis,
) -> None:
    holding(redis_client, ME, 1)  # the caller itself, with no heartbeat of its own here
    holding(redis_client, "done", 1)
    redis_client.xack(STREAM, GROUP, *[e for e, _ in redis_client.xrange(STREAM)][1:])

    found = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude=ME)

    assert {c["name"] for c in redis_client.xinfo_consumers(STREAM, GROUP)} == {ME, "done"}
    assert found == ["done"]


def test_no_stream_or_no_group_has_no_dead_consumers(redis_client: redis.Redis) -> None:
    assert liveness.dead_consumers(redis_client, STREAM, GROUP, exclude=ME) == []
    redis_client.xadd(STREAM, {"n": "1"})
    assert liveness.dead_consumers(redis_client, STREAM, GROUP, exclude=ME) == []


def test_the_caller_takes_the_dead_consumers_entries_and_leaves_the_live_ones(
    redis_client: redis.Redis,
) -> None:
    dead_ids = holding(redis_client, "dead", 3)
    holding(redis_client, "live", 2)
    beating(redis_client, "live")
    lapsed(redis_client, "dead")
    dead = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude=ME)

    taken = liveness.take_over(redis_client, STREAM, GROUP, ME, dead=dead, count=100, min_idle_s=MIN_IDLE_S)

    assert sorted(c.entry_id for c in taken) == sorted(dead_ids)
    assert {c.deliveries for c in taken} == {2}
    assert owners(redis_client) == {"live": 2, ME: 3}
    assert liveness.dead_consumers(redis_client, STREAM, GROUP, exclude=ME) == []


def test_a_takeover_stops_at_its_count_across_dead_consumers(redis_client: redis.Redis) -> None:
    holding(redis_client, "dead-a", 3)
    holding(redis_client, "dead-b", 3)
    lapsed(redis_client, "dead-a")
    lapsed(redis_client, "dead-b")
    dead = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude=ME)

    taken = liveness.take_over(redis_client, STREAM, GROUP, ME, dead=dead, count=4, min_idle_s=MIN_IDLE_S)

    assert len(taken) == 4
    assert sum(owners(redis_client).values()) == 6
    assert owners(redis_client)[ME] == 4


def test_entries_a_dead_consumer_touched_more_recently_than_the_idle_time_are_left_alone(
    redis_client: redis.Redis,
) -> None:
    holding(redis_client, "dead", 2)
    lapsed(redis_client, "dead")

    taken = liveness.take_over(redis_client, STREAM, GROUP, ME, dead=["dead"], count=100)

    assert taken == []  # the default idle time is the heartbeat's lifetime: far longer than this test
    assert owners(redis_client) == {"dead": 2}

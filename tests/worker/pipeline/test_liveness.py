"""Who may take a consumer name: a restarted worker gets its old name back unless the process that
holds it still runs (``worker.pipeline.liveness.claim_name``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest
import redis

from producer import names
from tests.support.waiting import wait_for
from worker import keys
from worker.pipeline import claims, liveness, streams

pytestmark = pytest.mark.integration

NAME = "w1@host#1"


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def _holder(client: redis.Redis, pid: int, token_made: float) -> None:
    token = f"{socket.gethostname()}|{pid}|{token_made:.3f}"
    client.set(keys.consumer_alive(NAME), token, px=8000)


def test_a_restarted_worker_takes_its_name_back_from_the_zombie_of_its_killed_predecessor(
    redis_client: redis.Redis,
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; not reaped until wait()
    wait_for(lambda: psutil.Process(dead.pid).status() == psutil.STATUS_ZOMBIE, message="a zombie")
    _holder(redis_client, dead.pid, time.time())

    name = liveness.claim_name(redis_client, NAME, liveness.process_token())

    dead.wait()
    assert name == NAME


def test_a_process_that_got_the_pid_after_the_heartbeat_was_written_does_not_keep_the_name(
    redis_client: redis.Redis, sleeper: subprocess.Popen[bytes]
) -> None:
    started = psutil.Process(sleeper.pid).create_time()
    _holder(redis_client, sleeper.pid, started - 60)

    name = liveness.claim_name(redis_client, NAME, liveness.process_token())

    assert name == NAME


def test_a_live_holder_keeps_its_name_and_the_newcomer_gets_a_unique_one(
    redis_client: redis.Redis, sleeper: subprocess.Popen[bytes]
) -> None:
    _holder(redis_client, sleeper.pid, time.time())

    name = liveness.claim_name(redis_client, NAME, liveness.process_token())

    assert name.startswith(f"{NAME}~")
    assert redis_client.get(keys.consumer_alive(NAME)) is not None


STREAM = "unsub:buf:test"
GROUP = "deliver"


def _read_as(client: redis.Redis, consumer: str, entries: int) -> list[str]:
    streams.ensure_group(client, STREAM, GROUP)
    ids = [str(client.xadd(STREAM, {"d": str(n)})) for n in range(entries)]
    client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=entries)
    return ids


def _beat(client: redis.Redis, consumer: str, token_made: float) -> None:
    client.set(keys.consumer_alive(consumer), f"{socket.gethostname()}|1|{token_made:.3f}", px=8000)


def test_a_restarted_name_takes_back_what_it_still_holds_and_not_what_another_took_over(
    redis_client: redis.Redis,
) -> None:
    ids = _read_as(redis_client, "w1@h#1", 2)
    redis_client.xclaim(STREAM, GROUP, "w2@h#1", 0, [ids[0]])

    claimed = streams.claim_from(
        redis_client, STREAM, GROUP, "w1@h#1", owner="w1@h#1", min_idle_s=0, count=10
    )

    assert [(c.entry_id, c.deliveries) for c in claimed] == [(ids[1], 2)]
    owners = {
        r["message_id"]: r["consumer"]
        for r in streams.pending_of(redis_client, STREAM, GROUP, None, min_idle_s=0, count=10)
    }
    assert owners == {ids[0]: "w2@h#1", ids[1]: "w1@h#1"}


def test_claims_a_name_held_before_its_live_process_took_it_are_taken_over_by_another(
    redis_client: redis.Redis,
) -> None:
    ids = _read_as(redis_client, "w1@h#1", 3)
    _beat(redis_client, "w1@h#1", time.time() + 60)  # the name's process began after the claims

    claimed = liveness.take_over_inherited(redis_client, STREAM, GROUP, "w2@h#1", count=10, min_idle_s=0)

    assert sorted(c.entry_id for c in claimed) == sorted(ids)
    assert streams.pending_of(redis_client, STREAM, GROUP, "w1@h#1", min_idle_s=0, count=10) == []


def test_claims_made_by_the_live_process_holding_the_name_are_left_to_it(redis_client: redis.Redis) -> None:
    _read_as(redis_client, "w1@h#1", 3)
    _beat(redis_client, "w1@h#1", time.time() - 60)  # the process began before it claimed them

    claimed = liveness.take_over_inherited(redis_client, STREAM, GROUP, "w2@h#1", count=10, min_idle_s=0)

    assert claimed == []
    assert len(streams.pending_of(redis_client, STREAM, GROUP, "w1@h#1", min_idle_s=0, count=10)) == 3


def _consumers(client: redis.Redis) -> set[str]:
    return {c["name"] for c in client.xinfo_consumers(STREAM, GROUP)}


def test_a_dead_consumer_holding_entries_stays_in_the_group_until_they_were_taken_over(
    redis_client: redis.Redis,
) -> None:
    ids = _read_as(redis_client, "gone@h#1", 2)
    dead = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude="w2@h#1")

    kept = liveness.take_over(redis_client, STREAM, GROUP, "w2@h#1", dead=dead, count=1, min_idle_s=0)

    assert [c.entry_id for c in kept] == [ids[0]]
    assert _consumers(redis_client) == {"gone@h#1", "w2@h#1"}  # it still holds ids[1]
    assert liveness.drop_if_done(redis_client, STREAM, GROUP, "gone@h#1") is False

    rest = liveness.take_over(redis_client, STREAM, GROUP, "w2@h#1", dead=dead, count=10, min_idle_s=0)

    assert [c.entry_id for c in rest] == [ids[1]]
    assert _consumers(redis_client) == {"w2@h#1"}
    owners = {
        r["consumer"] for r in streams.pending_of(redis_client, STREAM, GROUP, None, min_idle_s=0, count=10)
    }
    assert owners == {"w2@h#1"}


def test_a_dead_consumer_whose_entries_are_not_idle_long_enough_is_neither_robbed_nor_removed(
    redis_client: redis.Redis,
) -> None:
    _read_as(redis_client, "gone@h#1", 2)
    dead = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude="w2@h#1")

    claimed = liveness.take_over(redis_client, STREAM, GROUP, "w2@h#1", dead=dead, count=10, min_idle_s=60)

    assert claimed == []
    assert _consumers(redis_client) == {"gone@h#1"}
    assert len(streams.pending_of(redis_client, STREAM, GROUP, "gone@h#1", min_idle_s=0, count=10)) == 2


def test_a_dead_consumer_that_holds_nothing_is_removed_at_the_next_takeover(
    redis_client: redis.Redis,
) -> None:
    redis_client.xack(STREAM, GROUP, *_read_as(redis_client, "gone@h#1", 1))
    dead = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude="w2@h#1")

    claimed = liveness.take_over(redis_client, STREAM, GROUP, "w2@h#1", dead=dead, count=10)

    assert (dead, claimed) == (["gone@h#1"], [])
    assert redis_client.xinfo_consumers(STREAM, GROUP) == []


def test_a_consumer_with_a_heartbeat_is_never_removed_even_holding_nothing(redis_client: redis.Redis) -> None:
    redis_client.xack(STREAM, GROUP, *_read_as(redis_client, "w1@h#1", 1))
    _beat(redis_client, "w1@h#1", time.time())

    dropped = liveness.drop_if_done(redis_client, STREAM, GROUP, "w1@h#1")

    assert dropped is False
    assert liveness.dead_consumers(redis_client, STREAM, GROUP, exclude="w2@h#1") == []
    assert _consumers(redis_client) == {"w1@h#1"}


def test_dead_consumers_holding_entries_come_before_those_holding_nothing(redis_client: redis.Redis) -> None:
    redis_client.xack(STREAM, GROUP, *_read_as(redis_client, "empty@h#1", 1))
    _read_as(redis_client, "holder@h#1", 1)

    dead = liveness.dead_consumers(redis_client, STREAM, GROUP, exclude="w2@h#1")

    assert dead == ["holder@h#1", "empty@h#1"]


def _held_long(client: redis.Redis, stream: str, group: str, consumer: str) -> str:
    """One entry ``consumer`` has held (idle) for a minute."""
    streams.ensure_group(client, stream, group)
    entry_id = str(client.xadd(stream, {"record": "{}"}))
    client.xreadgroup(group, consumer, {stream: ">"}, count=1)
    client.xclaim(stream, group, consumer, 0, [entry_id], idle=60_000)
    return entry_id


def test_a_drain_removes_a_dead_consumer_of_a_buffer_stream_once_it_took_its_records_over(
    redis_client: redis.Redis,
) -> None:
    stream = keys.buffer_stream("c1")
    entry_id = _held_long(redis_client, stream, keys.BUFFER_GROUP, "gone@h#1")
    state = claims.ClaimState(adopted={"c1"})

    got = claims.claim(redis_client, state, "c1", "w2@h#1", count=10, reclaim_idle_s=3600)

    assert ([e.entry_id for e in got.entries], got.reclaimed) == ([entry_id], True)
    assert {c["name"] for c in redis_client.xinfo_consumers(stream, keys.BUFFER_GROUP)} == {"w2@h#1"}


def test_the_intake_stream_loses_a_dead_consumer_once_its_entries_were_taken_over(
    redis_client: redis.Redis,
) -> None:
    stream, group = names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP
    entry_id = _held_long(redis_client, stream, group, "gone:intake")
    dead = liveness.dead_consumers(redis_client, stream, group, exclude="w2:intake")

    taken = liveness.take_over(redis_client, stream, group, "w2:intake", dead=dead, count=100)

    assert [c.entry_id for c in taken] == [entry_id]
    assert {c["name"] for c in redis_client.xinfo_consumers(stream, group)} == {"w2:intake"}

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

from tests.support.waiting import wait_for
from worker import keys
from worker.pipeline import liveness, streams

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

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
from worker.pipeline import liveness

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

"""The shared rate limit: every worker together stays within the connection's limit."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from worker.errors import RateLimitedError
from worker.pipeline.ratelimit import WINDOW_MARGIN_MS, RedisGate


def test_many_threads_never_exceed_the_limit_in_any_one_second_window(redis_client: redis.Redis) -> None:
    sent: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        gate = RedisGate(redis_client, "conn-a", "5/second", max_wait_s=30)
        for _ in range(5):
            gate.acquire()
            with lock:
                sent.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert len(sent) == 20
    sent.sort()
    for i, started in enumerate(sent):
        in_window = [t for t in sent[i:] if t < started + 1.0]
        assert len(in_window) <= 5, f"{len(in_window)} requests within one second"


def test_a_wait_longer_than_allowed_hands_the_records_back_with_a_due_time(redis_client: redis.Redis) -> None:
    gate = RedisGate(redis_client, "conn-b", "2/minute", max_wait_s=0.5)
    gate.acquire()
    gate.acquire()

    with pytest.raises(RateLimitedError) as caught:
        gate.acquire()

    assert caught.value.retry_after_s is not None
    assert 59 < caught.value.retry_after_s <= 60 + WINDOW_MARGIN_MS / 1000


def test_a_429_pauses_every_worker_on_the_connection(redis_client: redis.Redis) -> None:
    one = RedisGate(redis_client, "conn-c", None, max_wait_s=0.05)
    other = RedisGate(redis_client, "conn-c", None, max_wait_s=0.05)

    one.penalize(2.0)

    with pytest.raises(RateLimitedError):
        other.acquire()


def test_no_limit_means_no_waiting(redis_client: redis.Redis) -> None:
    gate = RedisGate(redis_client, "conn-d", None)

    for _ in range(100):
        gate.acquire()

    assert not gate.limited

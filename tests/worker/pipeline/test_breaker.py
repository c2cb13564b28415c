"""The circuit breaker shared through Redis, and holding records without passing their maximum age."""

from __future__ import annotations

import io
import random
import threading
import time
from datetime import UTC, datetime

import pytest
import redis

from worker import keys
from worker.logs import configure_logging
from worker.pipeline import counters, deadletters
from worker.pipeline.breaker import Breaker, Mode
from worker.pipeline.outcomes import HoldCause, OutcomeWriter
from worker.records import DeliveryRecord
from worker.settings import BreakerPolicy, load_settings

pytestmark = pytest.mark.integration

POLICY = BreakerPolicy(failure_threshold=3, cooldown_s=60, max_cooldown_s=600)


def test_a_failure_while_another_worker_opened_the_breaker_tells_this_drain_to_hold(
    redis_client: redis.Redis,
) -> None:
    mine = Breaker(redis_client, "wc", POLICY)
    theirs = Breaker(redis_client, "wc", POLICY)
    theirs.trip("http_503")

    assert mine.on_failure("http_503", probe=False) is True
    assert mine.mode() is Mode.HOLD


def test_every_opening_is_counted_and_a_crowd_opening_at_once_logs_and_counts_one_transition(
    redis_client: redis.Redis,
) -> None:
    log_stream = io.StringIO()
    configure_logging("INFO", "json", log_stream)  # one known destination, whatever ran before
    breakers = [
        Breaker(redis.Redis(connection_pool=redis_client.connection_pool), "wc", POLICY) for _ in range(8)
    ]
    barrier = threading.Barrier(len(breakers))

    def trip(b: Breaker) -> None:
        barrier.wait()
        b.trip("auth_failed")

    threads = [threading.Thread(target=trip, args=(b,)) for b in breakers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    complaints = log_stream.getvalue().count("check this connection's credentials")
    assert complaints == 1
    opened = counters.read_connection(redis_client, "wc").get("breaker_opened", 0)
    assert 1 <= opened <= len(breakers)  # trips after the first see it open and return early
    Breaker(redis_client, "wc", POLICY).trip("auth_failed", now=time.time() + 61)  # a failed probe reopens
    assert counters.read_connection(redis_client, "wc")["breaker_opened"] == opened + 1


def test_a_held_record_never_waits_past_its_maximum_age(redis_client: redis.Redis, redis_url: str) -> None:
    settings = load_settings(
        broker_url=redis_url,
        connections=[
            {"name": "wc", "type": "insider", "base_url": "http://127.0.0.1:1", "partner_name": "p",
             "token": "t", "uploader_email": "ops@example.com", "retry": {"max_age_s": 100}},
        ],
    )  # fmt: skip
    conn = settings.connection("wc")
    now = time.time()
    record = DeliveryRecord(
        request_id="r", connection="wc", email="a@example.com", target="global",
        requested_at=datetime.now(UTC), accepted_at=now - 90,
    )  # fmt: skip
    writer = OutcomeWriter(redis_client, conn, 3600, random.Random(1), now=now)
    writer.hold("0-1", record, HoldCause.BREAKER_OPEN, until=now + 600)  # a long cool-down
    writer.commit()

    [(member, due)] = redis_client.zrange(keys.retry_zset("wc"), 0, -1, withscores=True)
    assert due == pytest.approx(now + 10)  # cut to the deadline, not the cool-down's end

    late = OutcomeWriter(redis_client, conn, 3600, random.Random(1), now=now + 10)
    late.hold("0-2", DeliveryRecord.model_validate_json(member), HoldCause.BREAKER_OPEN, until=now + 600)
    late.commit()
    [letter] = deadletters.scan(redis_client, deadletters.Filter())
    assert letter.reason == "retries_exhausted"
    assert "maximum age" in letter.message

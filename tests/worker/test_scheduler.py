"""The scheduler: promotes due retries, flushes buffers, holds exactly one lease."""

from __future__ import annotations

import threading
import time

from producer import names
from tests.support.intake import take_in
from tests.support.pipeline_harness import PipelineHarness
from worker import keys
from worker.pipeline import retry
from worker.records import DeliveryRecord
from worker.scheduler import Scheduler


def test_a_tick_queues_one_delivery_task_per_connection_with_waiting_records(
    harness: PipelineHarness,
) -> None:
    take_in(harness.rt, [{"email": "a@example.com", "connections": ["wc"]}], "t")

    report = Scheduler(harness.rt).tick()

    assert report.triggered == ["wc"]
    assert harness.sent == [("unsub.deliver", ["wc"], names.delivery_queue("whatcounts"))]
    assert Scheduler(harness.rt).tick().triggered == []  # the trigger gap keeps them from piling up


def test_a_tick_promotes_due_retries_back_into_the_buffer(harness: PipelineHarness) -> None:
    from datetime import UTC, datetime

    waiting = DeliveryRecord(
        request_id="r",
        connection="wc",
        email="a@example.com",
        target="global",
        requested_at=datetime.now(UTC),
        accepted_at=time.time(),
        attempts=1,
    )
    pipe = harness.redis.pipeline()
    retry.schedule(pipe, waiting, due=time.time() - 1)
    retry.schedule(pipe, waiting.model_copy(update={"request_id": "later"}), due=time.time() + 3600)
    pipe.execute()

    report = Scheduler(harness.rt).tick()

    assert report.promoted == 1
    assert harness.redis.xlen(keys.buffer_stream("wc")) == 1
    assert retry.waiting(harness.redis, "wc") == 1


def test_only_one_scheduler_leads(harness: PipelineHarness) -> None:
    first, second = Scheduler(harness.rt, identity="one"), Scheduler(harness.rt, identity="two")

    assert first.hold_lease() is True
    assert second.hold_lease() is False
    assert first.hold_lease() is True
    first.release_lease()
    assert second.hold_lease() is True


def test_the_scheduler_runs_until_stopped_and_gives_up_its_lease(harness: PipelineHarness) -> None:
    stop = threading.Event()
    scheduler = Scheduler(harness.rt, identity="runner")
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while not harness.redis.get(keys.SCHEDULER_HEARTBEAT) and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=10)

    assert not thread.is_alive()
    assert harness.redis.get(keys.SCHEDULER_HEARTBEAT)
    assert harness.redis.get(keys.SCHEDULER_LEASE) is None


def test_a_tick_deletes_dead_letters_past_their_retention(harness: PipelineHarness) -> None:
    from worker.pipeline import deadletters

    now = time.time()
    retention = harness.rt.settings.dlq_retention_s
    pipe = harness.redis.pipeline()
    for letter_id, age_s in (("d-expired", retention + 60), ("d-kept", retention - 60)):
        deadletters.write(
            pipe,
            deadletters.DeadLetter(
                id=letter_id, reason="rejected_by_provider", message="no", dead_at=now - age_s
            ),
        )
    pipe.execute()

    Scheduler(harness.rt).tick(now)

    assert [d.id for d in deadletters.scan(harness.redis, deadletters.Filter())] == ["d-kept"]

"""Draining a connection: batches, outcomes, retries, dead letters, reclaim, breaker, budget."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence

from tests.support.intake import take_in
from tests.support.pipeline_harness import PipelineHarness
from worker import keys
from worker.adapters.base import Outcome
from worker.pipeline import buffer, counters, deadletters, retry, status
from worker.pipeline.breaker import State
from worker.pipeline.delivery import drain
from worker.pipeline.status import DeliveryState
from worker.records import DeliveryRecord


def publish(harness: PipelineHarness, *emails: str, connection: str = "wc", **fields: object) -> None:
    payload = [{"email": e, "request_id": f"r-{e}", "connections": [connection], **fields} for e in emails]
    take_in(harness.rt, payload, origin=f"t-{time.monotonic()}")


def state_of(harness: PipelineHarness, email: str, connection: str = "wc") -> status.DeliveryStatus:
    found = status.read(harness.redis, f"r-{email}")
    assert found is not None
    return next(d for d in found.deliveries if d.connection == connection)


def retry_members(harness: PipelineHarness, connection: str = "wc") -> list[DeliveryRecord]:
    return [
        DeliveryRecord.model_validate_json(m)
        for m in harness.redis.zrange(keys.retry_zset(connection), 0, -1)
    ]


def test_records_are_delivered_in_batches_and_leave_the_buffer(harness: PipelineHarness) -> None:
    publish(harness, *(f"u{i}@example.com" for i in range(7)))

    report = drain(harness.rt, "wc")

    assert [len(call) for call in harness.adapter("wc").calls] == [3, 3, 1]
    assert (report.delivered, report.batches, report.provider_calls) == (7, 3, 3)
    assert buffer.backlog(harness.redis, "wc") == 0
    assert harness.redis.xpending(keys.buffer_stream("wc"), keys.BUFFER_GROUP)["pending"] == 0
    assert state_of(harness, "u0@example.com").state is DeliveryState.DELIVERED
    stats = counters.read_connection(harness.redis, "wc")
    assert (stats["delivered"], stats["batches"], stats["provider_calls"]) == (7, 3, 3)


def test_records_with_different_batch_keys_travel_in_different_calls(harness: PipelineHarness) -> None:
    publish(harness, "a@example.com", "b@example.com", scope="list", targets={"wc": {"list_ids": ["1"]}})
    publish(harness, "c@example.com", scope="list", targets={"wc": {"list_ids": ["2"]}})

    drain(harness.rt, "wc")

    assert sorted(sorted(c) for c in harness.adapter("wc").calls) == [
        ["a@example.com", "b@example.com"],
        ["c@example.com"],
    ]


def test_a_record_decided_without_a_call_is_dead_lettered_and_never_sent(harness: PipelineHarness) -> None:
    publish(harness, "nokey@example.com", "fine@example.com")

    report = drain(harness.rt, "wc")

    assert harness.adapter("wc").calls == [["fine@example.com"]]
    assert report.dead_letter_reasons == {"missing_customer_key": 1}
    [letter] = deadletters.scan(harness.redis, deadletters.Filter(reason="missing_customer_key"))
    assert (letter.email, letter.email_masked, letter.attempts) == (
        "nokey@example.com",
        "n***@example.com",
        0,
    )
    assert state_of(harness, "nokey@example.com").state is DeliveryState.DEAD_LETTERED


def test_a_transient_failure_waits_in_the_retry_set_and_comes_back_when_due(harness: PipelineHarness) -> None:
    adapter = harness.adapter("wc")
    adapter.script = lambda batch: [Outcome.retry("http_503", "unavailable", status=503) for _ in batch]
    publish(harness, "a@example.com")

    first = drain(harness.rt, "wc")

    assert first.retried == 1
    [waiting] = retry_members(harness)
    assert (waiting.attempts, waiting.last_error) == (1, "http_503: unavailable")
    delivery = state_of(harness, "a@example.com")
    assert delivery.state is DeliveryState.RETRYING
    assert delivery.next_attempt_at is not None
    assert (
        retry.promote_due(harness.redis, "wc", now=time.time()) == 0
        or delivery.next_attempt_at <= time.time()
    )

    adapter.script = lambda batch: [Outcome.delivered() for _ in batch]
    assert retry.promote_due(harness.redis, "wc", now=delivery.next_attempt_at + 1) == 1
    second = drain(harness.rt, "wc")

    assert second.delivered == 1
    assert state_of(harness, "a@example.com").attempts == 2
    assert retry_members(harness) == []


def test_retry_after_is_a_floor_for_the_next_attempt(harness: PipelineHarness) -> None:
    floor = time.time() + 500
    harness.adapter("wc").script = lambda batch: [
        Outcome.retry("http_503", "later", status=503, not_before=floor) for _ in batch
    ]
    publish(harness, "a@example.com")

    drain(harness.rt, "wc")

    [(_, due)] = harness.redis.zrange(keys.retry_zset("wc"), 0, -1, withscores=True)
    assert due >= floor


def test_a_record_that_exhausts_its_attempts_is_dead_lettered_with_the_last_error(
    harness: PipelineHarness,
) -> None:
    harness.adapter("wc").script = lambda batch: [
        Outcome.retry("http_500", f"boom {r.attempts}") for r in batch
    ]
    publish(harness, "a@example.com")

    for _ in range(3):  # max_attempts is 3
        drain(harness.rt, "wc")
        retry.promote_due(harness.redis, "wc", now=time.time() + 10_000)
        harness.redis.delete(keys.breaker("wc"))  # this test is about the schedule, not the breaker

    [letter] = deadletters.scan(harness.redis, deadletters.Filter())
    assert letter.reason == "retries_exhausted"
    assert letter.attempts == 3
    assert "3 attempts failed" in letter.message
    assert "http_500: boom 2" in letter.message
    assert retry_members(harness) == []


def test_rate_limit_waits_do_not_spend_attempts(harness: PipelineHarness) -> None:
    harness.adapter("wc").script = lambda batch: [
        Outcome.retry("rate_limited", "limit spent", not_before=time.time() + 30) for _ in batch
    ]
    publish(harness, "a@example.com")

    for _ in range(5):
        drain(harness.rt, "wc")
        retry.promote_due(harness.redis, "wc", now=time.time() + 10_000)

    assert deadletters.count(harness.redis) == 0
    assert buffer.backlog(harness.redis, "wc") == 1
    assert state_of(harness, "a@example.com").attempts == 0


def test_records_of_a_worker_that_died_are_taken_over_after_the_idle_time(harness: PipelineHarness) -> None:
    publish(harness, "a@example.com", "b@example.com")
    buffer.read_new(harness.redis, "wc", "dead-worker:1", 10)  # claimed, then the worker "dies"

    assert drain(harness.rt, "wc").delivered == 0
    time.sleep(1.1)  # reclaim_idle_s is 1 in this harness
    report = drain(harness.rt, "wc")

    assert (report.reclaimed, report.delivered) == (2, 2)
    assert buffer.backlog(harness.redis, "wc") == 0


def test_a_batch_whose_call_outlasts_the_idle_time_is_not_taken_over_and_is_counted_once(
    harness: PipelineHarness,
) -> None:
    publish(harness, "slow1@example.com", "slow2@example.com")
    stolen: list[int] = []

    def slow(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        time.sleep(1.6)  # longer than reclaim_idle_s (1 s in this harness)
        other = buffer.reclaim_stale(harness.redis, "wc", "other-worker:1", min_idle_s=1, count=10)
        stolen.append(len(other))
        return [Outcome.delivered(status=200) for _ in batch]

    harness.adapter("wc").script = slow
    report = drain(harness.rt, "wc")

    assert stolen == [0]
    assert report.delivered == 2
    assert counters.read_connection(harness.redis, "wc")["delivered"] == 2


def test_refreshing_claims_never_takes_a_record_another_worker_took_over(harness: PipelineHarness) -> None:
    publish(harness, "a@example.com")
    [entry] = buffer.read_new(harness.redis, "wc", "first:1", 10)
    time.sleep(1.1)
    assert [
        e.entry_id for e in buffer.reclaim_stale(harness.redis, "wc", "second:1", min_idle_s=1, count=10)
    ] == [entry.entry_id]

    assert buffer.keep_claimed(harness.redis, "wc", "first:1", [entry.entry_id]) == 0
    pending = harness.redis.xpending_range(keys.buffer_stream("wc"), keys.BUFFER_GROUP, "-", "+", 10)
    assert [p["consumer"] for p in pending] == ["second:1"]


def test_a_record_that_keeps_killing_its_worker_is_dead_lettered_as_poison(harness: PipelineHarness) -> None:
    publish(harness, "a@example.com")
    buffer.read_new(harness.redis, "wc", "w:0", 10)
    for n in range(buffer.MAX_DELIVERIES):
        buffer.reclaim_stale(harness.redis, "wc", f"w:{n + 1}", min_idle_s=0, count=10)

    time.sleep(1.1)
    drain(harness.rt, "wc")

    [letter] = deadletters.scan(harness.redis, deadletters.Filter())
    assert letter.reason == "poison_record"
    assert harness.adapter("wc").calls == []


def test_an_unreadable_buffer_entry_is_dead_lettered_as_corrupt(harness: PipelineHarness) -> None:
    buffer.ensure_group(harness.redis, "wc")
    harness.redis.xadd(keys.buffer_stream("wc"), {buffer.RECORD_FIELD: "{not a record"})

    drain(harness.rt, "wc")

    [letter] = deadletters.scan(harness.redis, deadletters.Filter())
    assert (letter.reason, letter.raw) == ("corrupt_record", "{not a record")
    assert buffer.backlog(harness.redis, "wc") == 0


def failing(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
    return [Outcome.retry("http_502", "bad gateway", status=502) for _ in batch]


def test_repeated_failures_open_the_breaker_and_records_wait_without_spending_attempts(
    harness: PipelineHarness,
) -> None:
    harness.adapter("wc").script = failing
    publish(harness, *(f"u{i}@example.com" for i in range(9)))  # three batches; threshold is 2

    report = drain(harness.rt, "wc")

    assert len(harness.adapter("wc").calls) == 2
    assert (report.retried, report.held) == (6, 3)
    assert harness.rt.breaker(harness.rt.settings.connection("wc")).read().state is State.OPEN
    held = [r for r in retry_members(harness) if r.last_error == "breaker_open"]
    assert len(held) == 3
    assert all(r.attempts == 0 for r in held)


def test_an_open_breaker_holds_new_records_and_one_probe_decides(harness: PipelineHarness) -> None:
    breaker = harness.rt.breaker(harness.rt.settings.connection("wc"))
    breaker.trip("http_503", now=time.time() - 100)  # open, cool-down already over
    breaker.trip("http_503")  # reopen with the cool-down running
    publish(harness, "a@example.com", "b@example.com", "c@example.com", "d@example.com")

    held = drain(harness.rt, "wc")

    # Open: the drain claims nothing and calls nobody; the records wait in the buffer, unclaimed.
    assert (held.mode, held.skipped, held.held, harness.adapter("wc").calls) == (
        "hold",
        "breaker_open",
        0,
        [],
    )
    assert harness.redis.xlen(keys.buffer_stream("wc")) == 4

    harness.redis.hset(keys.breaker("wc"), "open_until", time.time() - 1)
    probed = drain(harness.rt, "wc")

    assert probed.mode == "probe"
    assert probed.delivered == 4
    assert breaker.read().state is State.CLOSED


def test_credentials_refused_after_a_fresh_token_open_the_breaker_and_keep_the_records(
    harness: PipelineHarness,
) -> None:
    harness.adapter("wc").script = lambda batch: [Outcome.reauth("401 after a fresh token") for _ in batch]
    publish(harness, "a@example.com", "b@example.com")

    report = drain(harness.rt, "wc")

    assert breaker_state(harness).reason == "auth_failed"
    assert (report.held, report.dead_lettered) == (2, 0)
    assert {r.last_error for r in retry_members(harness)} == {"auth_failed: 401 after a fresh token"}
    assert state_of(harness, "a@example.com").reason == "auth_failed"
    assert state_of(harness, "a@example.com").message == "401 after a fresh token"


def breaker_state(harness: PipelineHarness) -> object:
    return harness.rt.breaker(harness.rt.settings.connection("wc")).read()


def test_a_held_record_past_its_maximum_age_is_dead_lettered_with_the_true_reason(
    make_harness: object,
) -> None:
    from tests.support.pipeline_harness import WHATCOUNTS

    harness = make_harness([{**WHATCOUNTS, "retry": {"max_age_s": 1}}])  # type: ignore[operator]
    harness.adapter("wc").script = lambda batch: [Outcome.reauth("refused") for _ in batch]
    publish(harness, "a@example.com")
    drain(harness.rt, "wc")
    time.sleep(1.1)
    retry.promote_due(harness.redis, "wc", now=time.time() + 10_000)
    harness.redis.delete(keys.breaker("wc"))

    drain(harness.rt, "wc")

    [letter] = deadletters.scan(harness.redis, deadletters.Filter())
    assert letter.reason == "auth_failed"
    assert "last error: auth_failed: refused" in letter.message


def test_records_left_when_the_budget_runs_out_are_handed_back_at_once(harness: PipelineHarness) -> None:
    def slow(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        time.sleep(0.3)
        return [Outcome.delivered() for _ in batch]

    harness.adapter("wc").script = slow
    publish(harness, *(f"u{i}@example.com" for i in range(9)))

    report = drain(harness.rt, "wc", budget_s=0.2)

    assert (report.delivered, report.handed_back, report.held) == (3, 6, 0)
    assert retry.promote_due(harness.redis, "wc", now=time.time()) == 6
    assert drain(harness.rt, "wc").delivered == 6


def test_an_adapter_that_raises_does_not_lose_the_batch(harness: PipelineHarness) -> None:
    def broken(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        raise RuntimeError("adapter bug")

    harness.adapter("wc").script = broken
    publish(harness, "a@example.com")

    report = drain(harness.rt, "wc")

    assert report.retried == 1
    assert [r.last_error for r in retry_members(harness)] == ["adapter_error: RuntimeError: adapter bug"]


def test_draining_an_unknown_or_busy_connection_reports_why_it_did_nothing(harness: PipelineHarness) -> None:
    from worker.pipeline import slots

    assert drain(harness.rt, "nope").skipped == "unknown_connection"
    conn = harness.rt.settings.connection("wc")
    with contextlib.ExitStack() as stack:
        taken = [
            stack.enter_context(slots.hold(harness.redis, "wc", conn.max_parallel, 30)) for _ in range(4)
        ]
        assert taken == [True] * conn.max_parallel
        assert drain(harness.rt, "wc").skipped == "busy"


def test_the_report_counts_equal_the_counters(harness: PipelineHarness) -> None:
    harness.adapter("wc").script = lambda batch: [
        Outcome.dead("rejected_by_provider", "no") if r.email.startswith("bad") else Outcome.delivered()
        for r in batch
    ]
    publish(harness, "good1@example.com", "bad@example.com", "good2@example.com", "nokey@example.com")

    report = drain(harness.rt, "wc")

    stats = counters.read_connection(harness.redis, "wc")
    assert (report.delivered, report.dead_lettered) == (stats["delivered"], stats["dead_lettered"]) == (2, 2)
    assert stats["dead:rejected_by_provider"] == stats["dead:missing_customer_key"] == 1


class WorkerKilled(BaseException):
    """Stands for a SIGKILL in the middle of a drain: nothing after it runs."""


def test_a_redelivered_delivery_task_returns_the_counts_of_its_killed_run_too(
    harness: PipelineHarness,
) -> None:
    calls = 0

    def dies_on_second_call(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise WorkerKilled
        return [Outcome.delivered() for _ in batch]

    harness.adapter("wc").script = dies_on_second_call
    publish(harness, *(f"u{i}@example.com" for i in range(7)))
    with contextlib.suppress(WorkerKilled):
        drain(harness.rt, "wc", task_id="task-1")  # recorded one batch of 3, then "died"
    time.sleep(1.1)  # reclaim_idle_s is 1 in this harness

    again = drain(harness.rt, "wc", task_id="task-1")  # Celery redelivers the message: same task id

    stats = counters.read_connection(harness.redis, "wc")
    assert (again.delivered, again.batches) == (stats["delivered"], stats["batches"]) == (7, 3)
    assert again.reclaimed == 4  # the killed run had claimed all 7 and recorded 3
    assert drain(harness.rt, "wc", task_id="task-2").delivered == 0  # another task counts only its own


def test_a_drain_whose_worker_is_stopping_hands_back_everything_after_the_batch_in_flight(
    harness: PipelineHarness,
) -> None:
    stop = False

    def stop_during_first_call(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        nonlocal stop
        stop = True  # SIGTERM arrives while this batch is with the provider
        return [Outcome.delivered() for _ in batch]

    harness.adapter("wc").script = stop_during_first_call
    publish(harness, *(f"u{i}@example.com" for i in range(9)))
    harness.rt.stop_requested = lambda: stop
    report = drain(harness.rt, "wc", budget_s=60)

    assert (report.delivered, report.handed_back, report.stopped) == (3, 6, True)
    assert harness.redis.xpending(keys.buffer_stream("wc"), keys.BUFFER_GROUP)["pending"] == 0
    assert retry.promote_due(harness.redis, "wc", now=time.time()) == 6
    harness.rt.stop_requested = lambda: False  # the next worker is not stopping
    assert drain(harness.rt, "wc").delivered == 6

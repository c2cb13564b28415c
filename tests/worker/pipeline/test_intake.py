"""Intake: validation, de-duplication, one pending record per target, dead letters for the rest."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import redis

from producer import names
from tests.support.intake import drain_intake, take_in
from tests.support.pipeline_harness import PipelineHarness
from tests.support.waiting import wait_for
from worker import keys
from worker.pipeline import buffer, counters, deadletters, intake_loop, status
from worker.pipeline.intake import IntakeItem, items_from_payloads
from worker.pipeline.status import DeliveryState
from worker.records import DeliveryRecord


def take(harness: PipelineHarness, *payloads: object) -> dict[str, int]:
    return take_in(harness.rt, list(payloads), origin="task:t1").as_dict()


def buffered(harness: PipelineHarness, connection: str) -> list[DeliveryRecord]:
    entries = harness.redis.xrange(keys.buffer_stream(connection))
    return [DeliveryRecord.model_validate_json(fields[buffer.RECORD_FIELD]) for _, fields in entries]


def test_a_request_becomes_one_pending_record_per_target_connection(harness: PipelineHarness) -> None:
    report = take(harness, {"email": "Jane@Example.com", "request_id": "r1", "reason": "bye"})

    assert report["accepted"] == 1
    assert report["deliveries"] == 2
    [wc] = buffered(harness, "wc")
    [ins] = buffered(harness, "ins")
    assert (wc.email, wc.target, wc.reason) == ("jane@example.com", "global", "bye")
    assert ins.target == "global"
    found = status.read(harness.redis, "r1")
    assert found is not None
    assert {d.state for d in found.deliveries} == {DeliveryState.PENDING}
    assert found.meta is not None
    assert found.meta.email_masked == "j***@example.com"


def test_a_list_scoped_request_uses_the_targets_lists_or_the_connections_default(
    harness: PipelineHarness,
) -> None:
    take(
        harness,
        {"email": "a@example.com", "scope": "list", "targets": {"wc": {"list_ids": ["7", "9"]}}},
        {"email": "b@example.com", "scope": "list", "connections": ["wc"]},
    )

    assert sorted((r.email, r.target) for r in buffered(harness, "wc")) == [
        ("a@example.com", "list:7"),
        ("a@example.com", "list:9"),
        ("b@example.com", "list:5"),
    ]


def test_a_list_scoped_request_without_any_list_or_group_is_dead_lettered(harness: PipelineHarness) -> None:
    take(harness, {"email": "a@example.com", "request_id": "r1", "scope": "list", "connections": ["ins"]})

    [letter] = deadletters.scan(harness.redis, deadletters.Filter())
    assert (letter.reason, letter.connection, letter.request_id) == ("no_list_target", "ins", "r1")
    assert letter.request is not None
    assert buffered(harness, "ins") == []


def test_a_request_id_seen_before_is_not_delivered_again(harness: PipelineHarness) -> None:
    take(harness, {"email": "a@example.com", "request_id": "same"})
    report = take(
        harness,
        {"email": "a@example.com", "request_id": "same"},
        {"email": "b@example.com", "request_id": "same"},
    )

    assert report["duplicate_requests"] == 2
    assert len(buffered(harness, "wc")) == 1


def test_the_same_address_and_target_within_the_window_is_delivered_once(harness: PipelineHarness) -> None:
    take(harness, {"email": "a@example.com", "request_id": "first"})
    report = take(harness, {"email": "A@example.com", "request_id": "second", "connections": ["wc"]})

    assert report["deduplicated_deliveries"] == 1
    assert len(buffered(harness, "wc")) == 1
    second = status.read(harness.redis, "second")
    assert second is not None
    [delivery] = second.deliveries
    assert (delivery.state, delivery.duplicate_of) == (DeliveryState.DEDUPLICATED, "first")


def test_a_zero_window_turns_address_de_duplication_off(make_harness: object) -> None:
    harness = make_harness(dedupe_window_s=0)  # type: ignore[operator]
    take(
        harness,
        {"email": "a@example.com", "request_id": "first"},
        {"email": "a@example.com", "request_id": "second"},
    )

    assert len(buffered(harness, "wc")) == 2


def test_invalid_requests_are_dead_lettered_with_their_problems_and_the_rest_go_through(
    harness: PipelineHarness,
) -> None:
    report = take(
        harness,
        {"email": "not-an-address", "request_id": "bad-email"},
        {"email": "ok@example.com", "scope": "sideways"},
        "not json at all",
        12345,
        {"email": "good@example.com"},
    )

    assert report == {**report, "requests": 5, "accepted": 1, "invalid": 4}
    letters = {letter.reason: letter for letter in deadletters.scan(harness.redis, deadletters.Filter())}
    assert set(letters) == {"invalid_email", "invalid_message"}
    assert letters["invalid_email"].request_id == "bad-email"
    assert any(p.startswith("email:") for p in letters["invalid_email"].problems)
    assert deadletters.count(harness.redis) == 4
    assert len(buffered(harness, "wc")) == 1


def test_a_request_without_an_address_is_an_invalid_message_not_an_invalid_email(
    harness: PipelineHarness,
) -> None:
    take(harness, {"request_id": "no-email"}, {"request_id": "number", "email": 5})

    reasons = {
        letter.request_id: letter.reason for letter in deadletters.scan(harness.redis, deadletters.Filter())
    }
    assert reasons == {"no-email": "invalid_message", "number": "invalid_message"}


def test_an_unknown_connection_is_dead_lettered_for_that_connection_only(harness: PipelineHarness) -> None:
    take(harness, {"email": "a@example.com", "request_id": "r1", "connections": ["wc", "nope"]})

    [letter] = deadletters.scan(harness.redis, deadletters.Filter())
    assert (letter.reason, letter.connection) == ("unknown_connection", None)
    assert "'nope'" in letter.message
    assert len(buffered(harness, "wc")) == 1


def test_a_flood_of_made_up_connection_names_leaves_one_letter_a_request_and_no_key_per_name(
    harness: PipelineHarness,
) -> None:
    made_up = [f"made-up-{i}" for i in range(100)]
    before = set(harness.redis.keys("*"))

    take(harness, *({"email": f"x{i}@example.com", "connections": made_up} for i in range(10)))

    assert deadletters.count(harness.redis) == 10
    added = {k for k in harness.redis.keys("*") if k not in before}
    assert not [k for k in added if "made-up" in k], sorted(added)
    assert len(added) < 10 * 3 + 10  # status + address per request, plus the store's own few keys


def test_a_redelivered_message_adds_nothing(harness: PipelineHarness) -> None:
    message = [{"email": "a@example.com", "request_id": "r1"}, {"email": "broken"}]
    take(harness, *message)
    take(harness, *message)

    assert len(buffered(harness, "wc")) == 1
    assert deadletters.count(harness.redis) == 1
    assert counters.read_intake(harness.redis)["duplicate_requests"] == 1


def test_a_plain_json_message_in_the_native_stream_is_taken_in_and_acknowledged(
    harness: PipelineHarness,
) -> None:
    harness.redis.xadd(
        names.NATIVE_INTAKE_STREAM, {"message": json.dumps({"email": "n@example.com", "request_id": "n1"})}
    )
    harness.redis.xadd(
        names.NATIVE_INTAKE_STREAM, {"message": json.dumps([{"email": "m@example.com"}, {"email": 5}])}
    )
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": "{broken"})
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"other": "field"})

    report = drain_intake(harness.rt)

    assert (report.requests, report.accepted, report.invalid, report.refused_messages) == (3, 2, 1, 2)
    assert report.touched == {"wc", "ins"}
    assert harness.redis.xlen(names.NATIVE_INTAKE_STREAM) == 0
    assert sorted(r.email for r in buffered(harness, "wc")) == ["m@example.com", "n@example.com"]
    problems = [letter.problems for letter in deadletters.scan(harness.redis, deadletters.Filter())]
    assert any("has no 'message' field" in p[0] for p in problems)


def test_intake_items_keep_a_stable_origin_per_position() -> None:
    items = items_from_payloads([{"a": 1}, {"b": 2}], origin="task:x")

    assert items == [IntakeItem("task:x:0", {"a": 1}), IntakeItem("task:x:1", {"b": 2})]


def test_an_entry_that_holds_no_request_is_dead_lettered_and_leaves_the_stream(
    harness: PipelineHarness,
) -> None:
    entry_id = harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": "[]"})

    report = drain_intake(harness.rt)

    assert (report.requests, report.refused_messages) == (0, 1)
    assert harness.redis.xlen(names.NATIVE_INTAKE_STREAM) == 0
    letter = deadletters.get(harness.redis, deadletters.message_letter_id(f"stream:{entry_id}"))
    assert letter is not None
    assert (letter.reason, letter.problems) == ("invalid_message", ["message: holds no request"])


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (b'{"request_id": "bad", "email": "c@example.com", "targets": ' + b"[" * 5000 + b"]" * 5000 + b"}",
         "message: nested deeper than 16 levels"),
        (b'{"request_id": "bad", "email": "c@example.com", "email": "d@example.com"}',
         "message: an object has the same key twice"),
        (b'{"request_id": "bad", "email": "c@example.com", "reason": "caf\xe9"}', "message: not valid UTF-8"),
    ],
    ids=["nested too deep", "duplicate key", "latin-1"],
)  # fmt: skip
def test_a_flawed_request_is_dead_lettered_alone_and_its_siblings_are_taken_in(
    harness: PipelineHarness, bad: bytes, problem: str
) -> None:
    good = [json.dumps({"email": f"{n}@example.com", "request_id": n}).encode() for n in ("a", "b")]
    entry_id = harness.redis.xadd(
        names.NATIVE_INTAKE_STREAM, {"message": b"[%s, %s, %s]" % (good[0], bad, good[1])}
    )

    report = drain_intake(harness.rt)

    assert (report.requests, report.accepted, report.invalid, report.refused_messages) == (3, 2, 1, 0)
    assert status.read(harness.redis, "a") is not None
    assert status.read(harness.redis, "b") is not None
    letter = deadletters.get(harness.redis, deadletters.message_letter_id(f"stream:{entry_id}:1"))
    assert letter is not None
    assert (letter.reason, letter.problems, letter.request_id) == ("invalid_message", [problem], "bad")
    assert "<refused: " in (letter.raw or "")


def test_the_intake_loop_decodes_one_message_at_a_time_as_its_transactions_fill(
    harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        requests = [{"email": f"m{n}.r{i}@example.com", "request_id": f"m{n}-{i}"} for i in range(501)]
        harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps(requests)})
    decoded: list[str] = []
    decoded_at_commit: list[int] = []
    read_entry, run_intake = intake_loop.envelope.read_entry, intake_loop.run_intake
    monkeypatch.setattr(intake_loop.envelope, "read_entry", lambda *a: decoded.append(a[0]) or read_entry(*a))
    monkeypatch.setattr(
        intake_loop,
        "run_intake",
        lambda *a, **k: decoded_at_commit.append(len(decoded)) or run_intake(*a, **k),
    )

    report = drain_intake(harness.rt)

    assert report.accepted == 3 * 501
    assert decoded_at_commit == [1, 2, 2, 3, 3, 3]  # read all first, it was [3, 3, 3, 3, 3, 3]


def test_a_turn_reads_new_entries_up_to_its_byte_budget_and_the_rest_on_the_next(
    harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):
        request = {"email": f"b{n}@example.com", "request_id": f"b{n}", "reason": "r" * 600}
        harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps(request)})
    monkeypatch.setattr(intake_loop, "READ_BUDGET_BYTES", 1000)
    loop = intake_loop.IntakeLoop(harness.rt, consumer="test:intake", client=harness.redis)

    first, second = loop.turn(), loop.turn()

    assert (first.accepted, second.accepted) == (2, 1)


def test_an_entry_larger_than_a_message_may_be_reaches_the_worker_as_its_head_only(
    harness: PipelineHarness,
) -> None:
    limit = harness.rt.settings.max_message_bytes
    entry_id = harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": "x" * (limit + 1), "more": "yz"})
    reader = intake_loop.NewEntries(harness.redis, max_entry_bytes=limit)

    [claim] = reader.read("test:intake", count=10, budget_bytes=10 * limit)

    assert claim.entry_id == entry_id
    assert claim.fields == {"celery_oversize": "x" * 8192, "bytes": str(limit + 3)}


def test_an_entry_larger_than_a_message_may_be_is_dead_lettered_as_too_large(
    harness: PipelineHarness,
) -> None:
    limit = harness.rt.settings.max_message_bytes
    entry_id = harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": "x" * (limit + 1)})

    report = drain_intake(harness.rt)

    assert (report.requests, report.refused_messages) == (0, 1)
    letter = deadletters.get(harness.redis, deadletters.message_letter_id(f"stream:{entry_id}"))
    assert letter is not None
    assert letter.reason == "message_too_large"
    assert letter.problems == [f"message: {limit + 1} bytes, more than the {limit} a message may hold"]


def test_a_request_written_as_json_text_inside_a_string_is_refused_not_decoded_again(
    harness: PipelineHarness,
) -> None:
    text = json.dumps({"email": "a@example.com", "request_id": "in-a-string"})

    report = take(harness, text, {"email": "b@example.com", "request_id": "an-object"})

    assert (report["accepted"], report["invalid"]) == (1, 1)
    assert status.read(harness.redis, "in-a-string") is None
    letter = deadletters.get(harness.redis, deadletters.message_letter_id("task:t1:0"))
    assert letter is not None
    assert letter.problems == ["message: expected a JSON object, got string"]


def test_an_invalid_request_reusing_the_id_of_a_request_taken_in_leaves_its_status_alone(
    harness: PipelineHarness,
) -> None:
    take(harness, {"email": "a@example.com", "request_id": "mine"})
    before = status.read(harness.redis, "mine")

    report = take(harness, {"email": "not an address", "request_id": "mine"})

    assert report["invalid"] == 1
    assert status.read(harness.redis, "mine") == before


def test_a_valid_request_taken_in_after_an_invalid_one_with_its_id_shows_only_its_own_deliveries(
    harness: PipelineHarness,
) -> None:
    take(harness, {"email": "not an address", "request_id": "later"})
    take(harness, {"email": "b@example.com", "request_id": "later"}, {"email": "bad", "request_id": "later"})

    found = status.read(harness.redis, "later")

    assert found is not None
    assert sorted(d.connection for d in found.deliveries) == ["ins", "wc"]
    assert {d.state for d in found.deliveries} == {DeliveryState.PENDING}


def test_what_a_failed_turn_read_is_taken_in_by_the_next_turn_not_left_pending(
    harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps({"email": "a@example.com"})})
    loop = intake_loop.IntakeLoop(harness.rt, consumer="test:intake", client=harness.redis)
    loop.turn()  # the loop's first turn (nothing of its own pending yet)
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps({"email": "b@example.com"})})
    real = intake_loop.run_intake
    calls = {"n": 0}

    def redis_goes_away(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.ConnectionError("Redis restarted")
        return real(*args, **kwargs)

    monkeypatch.setattr(intake_loop, "run_intake", redis_goes_away)
    stop = threading.Event()
    monkeypatch.setattr(intake_loop, "FAILURE_PAUSE_S", 0.0)
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    wait_for(lambda: harness.redis.xlen(names.NATIVE_INTAKE_STREAM) == 0, timeout_s=10, message="intake")
    stop.set()
    runner.join(5)

    assert calls["n"] >= 2  # the failed turn's entry was read again by the next turn, at once
    assert sorted(r.email for r in buffered(harness, "wc")) == ["a@example.com", "b@example.com"]

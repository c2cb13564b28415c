"""Intake entries that cannot get an outcome: one that keeps stopping whoever reads it is dead-lettered
as poison after ``MAX_DELIVERIES`` takes, one the reader itself fails on is dead-lettered at once;
either way it is acknowledged and leaves the stream, and intake goes on (real Redis)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
import redis

from producer import names
from tests.support.pipeline_harness import PipelineHarness
from worker import keys
from worker.pipeline import counters, deadletters, envelope, intake_loop, status
from worker.pipeline.intake_loop import IntakeLoop

CONSUMER = "w1@host:intake"


class Crash(Exception):
    """What the message does to the process taking it in (it never gets to commit)."""


def restarted_loop(harness: PipelineHarness) -> IntakeLoop:
    """A worker started again under the same consumer name: it takes back its own pending entries."""
    return IntakeLoop(harness.rt, consumer=CONSUMER, client=harness.redis)


def crash_on_requests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Taking in any request crashes the turn; refused messages alone go through. Returns the
    number of requests of each crashed attempt."""
    real = intake_loop.run_intake
    crashes: list[int] = []

    def take_in(rt: Any, items: list[Any], **kwargs: Any) -> Any:
        if items:
            crashes.append(len(items))
            raise Crash("the process died taking this message in")
        return real(rt, items, **kwargs)

    monkeypatch.setattr(intake_loop, "run_intake", take_in)
    return crashes


def pending(client: redis.Redis) -> int:
    return int(client.xpending(names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP)["pending"])


def test_an_entry_taken_up_more_than_the_limit_is_dead_lettered_as_poison_and_acknowledged(
    harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = {"email": "kills@example.com", "request_id": "killer"}
    entry_id = harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps(request)})
    crashes = crash_on_requests(monkeypatch)
    for _ in range(intake_loop.MAX_DELIVERIES):
        with pytest.raises(Crash):
            restarted_loop(harness).turn()
    assert pending(harness.redis) == 1  # every crash left it pending under the name

    report = restarted_loop(harness).turn()

    assert crashes == [1] * intake_loop.MAX_DELIVERIES
    assert (report.requests, report.refused_messages) == (0, 1)
    letter = deadletters.get(harness.redis, deadletters.message_letter_id(f"stream:{entry_id}"))
    assert letter is not None
    assert letter.reason == "poison_message"
    assert letter.problems == [
        f"message: taken up {intake_loop.MAX_DELIVERIES + 1} times without an outcome"
        " (it stops the process reading it)"
    ]
    assert "killer" in (letter.raw or "")
    assert harness.redis.xlen(names.NATIVE_INTAKE_STREAM) == 0
    assert pending(harness.redis) == 0
    assert status.read(harness.redis, "killer") is None  # unread: nothing of it was taken in
    assert counters.read_intake(harness.redis)["refused_messages"] == 1


def test_an_entry_taken_up_as_often_as_the_limit_is_still_read(
    harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps({"email": "a@example.com"})})
    crashes = crash_on_requests(monkeypatch)
    for _ in range(intake_loop.MAX_DELIVERIES - 1):
        with pytest.raises(Crash):
            restarted_loop(harness).turn()

    with pytest.raises(Crash):
        restarted_loop(harness).turn()

    assert crashes == [1] * intake_loop.MAX_DELIVERIES
    assert deadletters.count(harness.redis) == 0
    assert pending(harness.redis) == 1


def test_an_entry_the_reader_fails_on_is_dead_lettered_and_its_neighbours_are_taken_in(
    harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = envelope.read_entry

    def reader_bug(entry_id: str, fields: Any, limits: envelope.Limits) -> envelope.Message:
        if b"trips-the-reader" in fields.get(b"message", b""):
            raise KeyError("a bug in the reader")
        return real(entry_id, fields, limits)

    monkeypatch.setattr(envelope, "read_entry", reader_bug)
    bad = {"email": "trips-the-reader@example.com", "request_id": "bad"}
    bad_id = harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps(bad)})
    good = {"email": "fine@example.com", "request_id": "good"}
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps(good)})

    report = restarted_loop(harness).turn()

    assert (report.requests, report.accepted, report.refused_messages) == (1, 1, 1)
    letter = deadletters.get(harness.redis, deadletters.message_letter_id(f"stream:{bad_id}"))
    assert letter is not None
    assert (letter.reason, letter.problems) == ("invalid_message", ["message: could not be read (KeyError)"])
    assert "trips-the-reader" in (letter.raw or "")
    assert harness.redis.xlen(names.NATIVE_INTAKE_STREAM) == 0
    assert pending(harness.redis) == 0
    assert status.read(harness.redis, "good") is not None


def test_an_entry_that_crashes_its_reader_is_poisoned_alone_and_its_neighbours_are_taken_in(
    harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    emails = [f"n{i}@example.com" for i in range(4)]
    for i, email in enumerate(emails[:2]):
        harness.redis.xadd(
            names.NATIVE_INTAKE_STREAM, {"message": json.dumps({"email": email, "request_id": f"n{i}"})}
        )
    killer = {"email": "kills@example.com", "request_id": "killer"}
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {"message": json.dumps(killer)})
    for i, email in enumerate(emails[2:], start=2):
        harness.redis.xadd(
            names.NATIVE_INTAKE_STREAM, {"message": json.dumps({"email": email, "request_id": f"n{i}"})}
        )
    real = intake_loop.run_intake

    def take_in(rt: Any, items: list[Any], **kwargs: Any) -> Any:
        if any(
            isinstance(item.payload, dict) and item.payload.get("request_id") == "killer" for item in items
        ):
            raise Crash("the process died taking this message in")
        return real(rt, items, **kwargs)

    monkeypatch.setattr(intake_loop, "run_intake", take_in)
    with pytest.raises(Crash):  # the first read takes all five together, and dies with them
        restarted_loop(harness).turn()

    for _ in range(20):  # restarts: each takes back its pending entries, one a turn
        loop = restarted_loop(harness)
        with contextlib.suppress(Crash):
            while pending(harness.redis):
                loop.turn()

    assert pending(harness.redis) == 0
    assert [status.read(harness.redis, f"n{i}") is not None for i in range(4)] == [True] * 4
    assert status.read(harness.redis, "killer") is None
    letters = list(deadletters.scan(harness.redis, deadletters.Filter()))
    assert [(letter.reason, "killer" in (letter.raw or "")) for letter in letters] == [
        ("poison_message", True)
    ]

"""What the worker does with a message Celery's consumer cannot run: the pieces, on fakeredis.

The whole path (a real worker, hand-built envelopes on the control and delivery queues) is
``tests/reliability/test_side_queues.py``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import pytest
import redis
from kombu.exceptions import ContentDisallowed, DecodeError

from producer import names
from worker import side_queues
from worker.pipeline import counters, deadletters
from worker.pipeline.deadletters import RAW_MESSAGE_CHARS
from worker.reasons import DeadReason
from worker.side_queues import SideQueueConsumer


@dataclass
class FakeMessage:
    """The parts of kombu's Redis message the side door reads, and whether it was acknowledged."""

    headers: Any
    queue: str = names.CONTROL_QUEUE
    content_type: str = "application/json"
    body: bytes = b"[[], {}, {}]"
    acknowledged: bool = False
    _raw: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.delivery_info = {"exchange": "", "routing_key": self.queue}
        self._raw = {"body": "W1tdLCB7fSwge31d", "headers": self.headers, "content-type": self.content_type}

    def ack(self) -> None:
        self.acknowledged = True


def message(task: str, task_id: str = "t-1", **options: Any) -> FakeMessage:
    return FakeMessage(headers={"task": task, "id": task_id}, **options)


def unreachable_redis() -> redis.Redis:
    server = fakeredis.FakeServer()
    server.connected = False  # every command raises ConnectionError
    return fakeredis.FakeRedis(server=server)


def test_an_intake_message_on_another_queue_is_handed_to_the_intake_door() -> None:
    refusal = side_queues.unknown_task(message(names.INTAKE_TASK, queue=names.delivery_queue("insider")))

    assert refusal.handed_over
    assert json.loads(refusal.envelope)["headers"]["task"] == names.INTAKE_TASK


def test_a_handed_over_message_is_pushed_as_received_onto_the_intake_list(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    refusal = side_queues.unknown_task(message(names.INTAKE_TASK))

    side_queues.keep(fake_redis, refusal)

    assert fake_redis.lrange(names.INTAKE_QUEUE, 0, -1) == [refusal.envelope]
    assert deadletters.count(fake_redis) == 0


def test_a_task_name_differing_only_in_case_is_an_unknown_task() -> None:
    refusal = side_queues.unknown_task(message("unsub.Intake"))

    assert refusal.reason is DeadReason.UNKNOWN_TASK
    assert (
        refusal.problem == "message: task 'unsub.Intake' is not one this worker runs (queue 'unsub.control')"
    )


def test_an_unknown_task_becomes_a_dead_letter_counted_as_a_refused_message(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    refusal = side_queues.unknown_task(message("unsub.nothing", task_id="abc"))

    side_queues.keep(fake_redis, refusal, now=1000.0)

    letter = deadletters.get(fake_redis, deadletters.message_letter_id(refusal.origin))
    assert letter is not None
    assert (letter.reason, letter.dead_at, letter.raw) == (DeadReason.UNKNOWN_TASK, 1000.0, refusal.envelope)
    assert counters.read_intake(fake_redis) == {"refused_messages": 1}


def test_a_redelivered_message_overwrites_its_own_letter(fake_redis: fakeredis.FakeRedis) -> None:
    refusal = side_queues.unknown_task(message("unsub.nothing", task_id="abc"))

    side_queues.keep(fake_redis, refusal)
    side_queues.keep(fake_redis, side_queues.unknown_task(message("unsub.nothing", task_id="abc")))

    assert deadletters.count(fake_redis) == 1


def test_a_message_without_a_task_id_gets_a_letter_id_from_its_envelope() -> None:
    first = side_queues.unknown_message(FakeMessage(headers={"x": 1}))
    other = side_queues.unknown_message(FakeMessage(headers={"x": 2}))

    assert first.origin.startswith("queue:unsub.control:sha256:")
    assert first.origin != other.origin


def test_a_body_the_decoder_refused_is_an_invalid_message_naming_why() -> None:
    exc = DecodeError("JSON nested deeper than 64 levels")

    refusal = side_queues.decode_error(message("unsub.deliver"), exc)

    assert refusal.reason is DeadReason.INVALID_MESSAGE
    assert refusal.problem.startswith(
        "message: body could not be decoded (JSON nested deeper than 64 levels)"
    )


def test_a_content_type_celery_refuses_is_an_invalid_message_naming_the_type() -> None:
    exc = ContentDisallowed("Refusing to deserialize untrusted content of type yaml")

    refusal = side_queues.invalid_task(message("unsub.ping", content_type="application/x-yaml"), exc)

    assert refusal.reason is DeadReason.INVALID_MESSAGE
    assert refusal.problem.startswith(
        "message: content type 'application/x-yaml' is not accepted (JSON only)"
    )


def test_a_huge_envelope_is_kept_cut_in_its_letter(fake_redis: fakeredis.FakeRedis) -> None:
    big = message("unsub.nothing")
    big._raw["body"] = "x" * (RAW_MESSAGE_CHARS * 3)
    refusal = side_queues.unknown_task(big)

    side_queues.keep(fake_redis, refusal)

    letter = deadletters.get(fake_redis, deadletters.message_letter_id(refusal.origin))
    assert letter is not None
    assert letter.raw is not None
    assert len(letter.raw) == RAW_MESSAGE_CHARS


def test_a_failed_write_is_reported_not_raised() -> None:
    refusal = side_queues.unknown_task(message("unsub.nothing"))

    assert side_queues.kept(refusal, unreachable_redis()) is False


def test_the_consumer_leaves_a_message_unacknowledged_when_its_letter_cannot_be_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(side_queues, "_state_redis", unreachable_redis)
    consumer = object.__new__(SideQueueConsumer)
    received = message("unsub.nothing")

    consumer.on_unknown_task(None, received, KeyError("unsub.nothing"))
    consumer.on_decode_error(received, DecodeError("bad"))

    assert received.acknowledged is False


def test_the_consumer_acknowledges_a_handed_over_message_once_it_is_on_the_intake_list(
    monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
) -> None:
    monkeypatch.setattr(side_queues, "_state_redis", lambda: fake_redis)
    consumer = object.__new__(SideQueueConsumer)
    received = message(names.INTAKE_TASK)

    consumer.on_unknown_task(None, received, KeyError(names.INTAKE_TASK))

    assert received.acknowledged is True
    assert fake_redis.llen(names.INTAKE_QUEUE) == 1


def test_a_kept_message_is_acknowledged_even_when_celerys_own_handler_fails(
    monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis
) -> None:
    monkeypatch.setattr(side_queues, "_state_redis", lambda: fake_redis)
    consumer = object.__new__(SideQueueConsumer)  # no app, no connection: Celery's handler raises
    received = message("unsub.nothing")

    consumer.on_unknown_task(None, received, KeyError("unsub.nothing"))

    assert received.acknowledged is True
    assert deadletters.count(fake_redis) == 1

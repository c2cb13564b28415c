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
from celery.exceptions import InvalidTaskError
from kombu.exceptions import ContentDisallowed, DecodeError

from producer import names
from worker import side_queues
from worker.pipeline import counters, deadletters
from worker.pipeline.deadletters import RAW_MESSAGE_CHARS
from worker.pipeline.trigger import DELIVER_TASK
from worker.reasons import DeadReason
from worker.side_queues import SideQueueConsumer
from worker.tasks import app


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


# -- registered tasks: messages Celery would choke on are refused before its Request is built -----


@dataclass
class TaskMessage:
    """A protocol 2 message for a registered task, its body decoded as kombu would."""

    payload: Any
    headers: dict[str, Any] = field(default_factory=lambda: {"task": DELIVER_TASK, "id": "t-1"})


def deliver(args: Any, kwargs: Any = None, embed: Any = None, **headers: Any) -> TaskMessage:
    body = [args, {} if kwargs is None else kwargs, embed]
    return TaskMessage(body, {"task": DELIVER_TASK, "id": "t-1", **headers})


def test_a_well_formed_delivery_message_has_no_problem() -> None:
    message = deliver(["insider"], embed={"callbacks": None}, timelimit=[None, 30])

    assert side_queues.task_message_problem(app.tasks[DELIVER_TASK], message, None) is None


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (TaskMessage({"a": 1}), "body is not [args, kwargs, embed]"),
        (TaskMessage([[], {}]), "body is not [args, kwargs, embed]"),
        (TaskMessage(5), "body is not [args, kwargs, embed]"),
        (TaskMessage(["args", {}, {}]), "body is not [args, kwargs, embed]"),
        (deliver(["insider"], kwargs=[]), "body is not [args, kwargs, embed]"),
        (deliver("insider"), "body is not [args, kwargs, embed]"),
        (deliver([["a"], 2, 3]), "arguments do not fit the task (deliver_task() takes 2 positional"),
        (deliver([], {"nope": 1}), "arguments do not fit the task (deliver_task() got an unexpected keyword"),
        (deliver(["insider"], id=None), "no task id"),
        (deliver(["insider"], id=""), "no task id"),
        (deliver(["insider"], timelimit=[1, 2, 3]), "'timelimit' is not two numbers of seconds"),
        (deliver(["insider"], timelimit="ab"), "'timelimit' is not two numbers of seconds"),
        (deliver(["insider"], timelimit=[True, None]), "'timelimit' is not two numbers of seconds"),
        (deliver(["insider"], timelimit=[float("nan"), None]), "'timelimit' is not two numbers of seconds"),
        (deliver(["insider"], timelimit=[-1, None]), "'timelimit' is not two numbers of seconds"),
    ],
)
def test_what_keeps_a_registered_task_message_from_running_is_named(
    message: TaskMessage, problem: str
) -> None:
    found = side_queues.task_message_problem(app.tasks[DELIVER_TASK], message, None)

    assert found is not None
    assert found.startswith(problem)


def test_a_protocol_1_body_is_checked_in_the_body() -> None:
    body = {"task": DELIVER_TASK, "id": "t-1", "args": [1, 2], "kwargs": {}}

    found = side_queues.task_message_problem(app.tasks[DELIVER_TASK], TaskMessage(None, {}), body)

    assert found is not None
    assert found.startswith("arguments do not fit the task")


def test_the_guarded_strategy_refuses_a_bad_message_with_celerys_invalid_task_error_before_celery() -> None:
    calls: list[Any] = []
    strategy = side_queues.guarded(app.tasks[DELIVER_TASK], lambda *args: calls.append(args))

    with pytest.raises(InvalidTaskError, match="no task id"):
        strategy(deliver(["insider"], id=None), None, "ack", "reject", [])
    strategy(deliver(["insider"]), None, "ack", "reject", [])

    assert len(calls) == 1


def test_an_invalid_task_problem_becomes_an_invalid_message_letter_naming_it() -> None:
    message = FakeMessage(headers={"task": DELIVER_TASK, "id": "t-9"}, queue=names.delivery_queue("insider"))

    refusal = side_queues.invalid_task(message, InvalidTaskError("arguments do not fit the task (x)"))

    assert refusal.reason is DeadReason.INVALID_MESSAGE
    assert refusal.problem == (
        "message: not a valid task message (arguments do not fit the task (x))"
        " (queue 'unsub.deliver.insider')"
    )

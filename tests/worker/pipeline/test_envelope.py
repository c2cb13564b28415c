"""Reading one intake stream entry: what each door accepts, and a value (never an exception) for
everything it refuses. Messages are built by hand (tests/support/hostile.py), not by the producer."""

from __future__ import annotations

import json
from typing import Any

import pytest

from producer import names
from tests.support.hostile import celery_envelope, nested, task_body
from worker.pipeline.deadletters import Reason
from worker.pipeline.envelope import MAX_JSON_DEPTH, TOO_DEEP_TEXT, Limits, Message, read_entry

LIMITS = Limits(max_bytes=1024 * 1024, max_requests=50)
GOOD: dict[str, Any] = {"email": "jane@example.com", "request_id": "good-1"}


def native(raw: bytes | str, entry_id: str = "1-0") -> Message:
    data = raw.encode() if isinstance(raw, str) else raw
    return read_entry(entry_id, {names.NATIVE_INTAKE_FIELD.encode(): data}, LIMITS)


def celery(raw: bytes, entry_id: str = "1-0") -> Message:
    return read_entry(entry_id, {b"celery": raw}, LIMITS)


def refusal(message: Message) -> tuple[str, str]:
    assert message.unusable is not None, f"expected a refusal, got {len(message.payloads)} payloads"
    return message.unusable.reason, message.unusable.problems[0]


@pytest.mark.parametrize(
    "message",
    [
        native("[]"),
        celery(celery_envelope(task_body([]), task_id="t-empty")),
        celery(celery_envelope(task_body([[]]), task_id="t-empty")),
        celery(celery_envelope(task_body([], {}), task_id="t-empty")),
    ],
    ids=["native empty array", "celery no arguments", "celery empty list argument", "celery empty kwargs"],
)
def test_a_message_that_holds_no_request_is_refused_rather_than_acknowledged_with_nothing(
    message: Message,
) -> None:
    reason, problem = refusal(message)

    assert reason == Reason.INVALID_MESSAGE
    assert problem == "message: holds no request"
    assert message.payloads == []


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 520, 950, 5000, 100_000])
def test_a_request_nested_too_deep_is_refused_alone_at_either_door(depth: int) -> None:
    other = {"email": "bob@example.com"}
    requests = f"{json.dumps(GOOD)}, {nested(depth)}, {json.dumps(other)}"
    by_door = [
        native(f"[{requests}]"),
        celery(celery_envelope(f"[[[{requests}]], {{}}, {{}}]".encode())),
    ]

    for message in by_door:
        assert message.unusable is None
        assert message.payloads == [GOOD, TOO_DEEP_TEXT, other]
        assert message.problems == {1: f"message: nested deeper than {MAX_JSON_DEPTH} levels"}


def test_a_lone_request_with_a_bomb_inside_is_refused_as_that_request() -> None:
    bomb = '{"email": "a@example.com", "targets": {"wc": ' + nested(100_000, '{"list_ids": ["5"]}') + "}}"

    message = native(bomb)

    assert message.payloads == [TOO_DEEP_TEXT]
    assert message.problems == {0: f"message: nested deeper than {MAX_JSON_DEPTH} levels"}

"""Reading one intake stream entry: what each door accepts, and a value (never an exception) for
everything it refuses. Messages are built by hand (tests/support/hostile.py), not by the producer."""

from __future__ import annotations

import bz2
import json
from typing import Any

import pytest

from producer import names
from tests.support.hostile import celery_envelope, nested, task_body, task_headers
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


BZIP2 = task_headers("t-1", compression="application/x-bz2")
PICKLE = "application/x-python-serialize"


@pytest.mark.parametrize(
    ("envelope", "problem"),
    [
        (celery_envelope(b"{not json", task_id="t-1"), "message: not valid JSON: Expecting property name"),
        (celery_envelope(b'[["\xff"], {}, {}]', task_id="t-1"), "message: not valid UTF-8"),
        (celery_envelope(b"", task_id="t-1", body_text="!!not base64"), "message: body is not valid base64"),
        (celery_envelope(b"\x80\x04.", task_id="t-1", content_type=PICKLE),
         f"message: content type {PICKLE!r} is not accepted (JSON only)"),
        (celery_envelope(bz2.compress(task_body([GOOD])), headers=BZIP2),
         "message: compression 'application/x-bz2' is not accepted"),
    ],
    ids=["invalid json", "not utf-8", "bad base64", "pickle", "bzip2"],
)  # fmt: skip
def test_a_celery_body_that_cannot_be_read_is_refused_under_its_task_id(
    envelope: bytes, problem: str
) -> None:
    message = celery(envelope, entry_id="9-0")

    reason, found = refusal(message)
    assert reason == Reason.INVALID_MESSAGE
    assert found.startswith(problem)
    assert (message.origin, message.task_id, message.task_name) == ("task:t-1", "t-1", names.INTAKE_TASK)


def test_a_celery_message_without_a_task_id_is_known_by_its_stream_entry() -> None:
    message = celery(celery_envelope(task_body([GOOD]), headers=task_headers("", task="unsub.Intake")), "9-0")

    assert refusal(message)[0] == Reason.UNKNOWN_TASK
    assert message.origin == "stream:9-0"

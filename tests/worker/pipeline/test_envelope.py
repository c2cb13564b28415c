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
from worker.pipeline.envelope import MAX_JSON_DEPTH, Limits, Message, read_entry

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


DEEP = f"message: nested deeper than {MAX_JSON_DEPTH} levels"


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        (nested(MAX_JSON_DEPTH), DEEP),
        (nested(520), DEEP),
        (nested(100_000), DEEP),
        ('{"email": "x@example.com", "targets": {"wc": ' + nested(5000, "{}") + "}}", DEEP),
        ('{"email": "x@example.com", "email": "y@example.com"}', "message: an object has the same key twice"),
        ('{"email": "x@example.com", "version": ' + "1" * 5000 + "}",
         "message: a number longer than 64 characters"),
        ('{"email": "x@example.com", "reason": "caf\xe9"}', "message: not valid UTF-8"),
    ],
    ids=["deep 16", "deep 520", "deep 100,000", "deep inside", "duplicate key", "long number", "latin-1"],
)  # fmt: skip
def test_a_flawed_request_is_refused_alone_at_either_door(bad: str, problem: str) -> None:
    other = {"email": "bob@example.com"}
    requests = f"{json.dumps(GOOD)}, {bad}, {json.dumps(other)}".encode(
        "latin-1" if "\xe9" in bad else "utf-8"
    )
    by_door = [native(b"[" + requests + b"]"), celery(celery_envelope(b"[[[" + requests + b"]], {}, {}]"))]

    for message in by_door:
        assert message.unusable is None
        assert (message.payloads[0], message.payloads[2]) == (GOOD, other)
        assert message.problems == {1: problem}


def test_a_request_given_as_a_flawed_argument_of_its_own_is_refused_alone() -> None:
    body = (
        b'[[{"email": "a@example.com", "email": "b@example.com"}, '
        + json.dumps(GOOD).encode()
        + b"], {}, {}]"
    )

    message = celery(celery_envelope(body))

    assert message.payloads[1] == GOOD
    assert message.problems == {0: "message: an object has the same key twice"}


def test_a_flaw_in_the_celery_bodys_own_structure_refuses_the_message() -> None:
    body = b"[[" + json.dumps(GOOD).encode() + b"], NaN, {}]"

    message = celery(celery_envelope(body, task_id="t-1"))

    assert refusal(message) == (Reason.INVALID_MESSAGE, "message: NaN and Infinity are not JSON")
    assert message.origin == "task:t-1"


BZIP2 = task_headers("t-1", compression="application/x-bz2")
PICKLE = "application/x-python-serialize"


@pytest.mark.parametrize(
    ("envelope", "problem"),
    [
        (celery_envelope(b"{not json", task_id="t-1"), "message: not valid JSON: Expecting property name"),
        (celery_envelope(b'[["a"], {}, {}]\xff', task_id="t-1"), "message: not valid UTF-8"),
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

"""The language-neutral intake end to end: plain JSON XADDed to the stream reaches the pipeline."""

from __future__ import annotations

import json

import pytest

from producer import InvalidRequestError, names, publish_json
from tests.support.intake import drain_intake
from tests.support.pipeline_harness import PipelineHarness
from worker import keys
from worker.pipeline import buffer


def buffered_emails(harness: PipelineHarness, connection: str) -> list[str]:
    entries = harness.redis.xrange(keys.buffer_stream(connection))
    return sorted(json.loads(fields[buffer.RECORD_FIELD])["email"] for _, fields in entries)


def test_a_message_xadded_with_a_plain_redis_client_is_taken_in(harness: PipelineHarness) -> None:
    # What a service in any language does: no Celery, no library, just XADD.
    message = {"email": "plain@example.com", "request_id": "go-service:1", "connections": ["wc"]}
    harness.redis.xadd(names.NATIVE_INTAKE_STREAM, {names.NATIVE_INTAKE_FIELD: json.dumps(message)})

    report = drain_intake(harness.rt)

    assert (report.requests, report.accepted) == (1, 1)
    assert buffered_emails(harness, "wc") == ["plain@example.com"]


def test_publish_json_sends_a_list_as_one_stream_entry_that_intake_takes_in(harness: PipelineHarness) -> None:
    publish_json(harness.redis, [{"email": "a@example.com"}, {"email": "b@example.com"}])

    assert harness.redis.xlen(names.NATIVE_INTAKE_STREAM) == 1
    report = drain_intake(harness.rt)
    assert report.accepted == 2
    assert buffered_emails(harness, "ins") == ["a@example.com", "b@example.com"]


def test_publish_json_refuses_an_invalid_request_before_writing(harness: PipelineHarness) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        publish_json(harness.redis, [{"email": "a@example.com"}, {"email": "broken"}])

    assert caught.value.index == 1
    assert harness.redis.xlen(names.NATIVE_INTAKE_STREAM) == 0

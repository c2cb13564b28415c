"""The intake loop stops only when retrying cannot help: Redis refusing its own keys for good."""

from __future__ import annotations

import threading

import pytest

from producer import names
from tests.support.pipeline_harness import PipelineHarness
from worker.errors import IntakeStoppedError
from worker.pipeline.intake_loop import IntakeLoop


def test_a_loop_whose_intake_stream_key_holds_a_list_stops_with_an_intake_stopped_error(
    harness: PipelineHarness,
) -> None:
    harness.redis.lpush(names.NATIVE_INTAKE_STREAM, '{"email": "a@example.com"}')
    loop = IntakeLoop(harness.rt, consumer="test:intake", client=harness.redis)

    with pytest.raises(IntakeStoppedError, match="holds another type of value") as raised:
        loop.run(threading.Event())

    assert "WRONGTYPE" in str(raised.value.__cause__)
    assert harness.redis.llen(names.NATIVE_INTAKE_STREAM) == 1  # left for an operator to look at

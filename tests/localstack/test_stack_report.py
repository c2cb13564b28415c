"""What a stack that does not settle reports: who holds which entries and who is alive, so a failed
run says whether work is stuck with a dead consumer, a live one, or nobody."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer.names import NATIVE_INTAKE_STREAM
from unsub_dev.errors import NotSettledError
from unsub_dev.localstack.stack import LocalStack
from worker import keys
from worker.pipeline import liveness, streams

pytestmark = pytest.mark.integration

#: No worker runs in these tests: nothing is ever sent to the sandbox.
NO_SANDBOX = "http://127.0.0.1:1"
INTAKE_CONSUMER = "w9@host:intake"
DELIVERY_CONSUMER = "w9@host#1"


def held_by(client: redis.Redis, stream: str, group: str, consumer: str, fields: dict[str, str]) -> None:
    """An entry ``consumer`` took and has not acknowledged (as a worker killed mid-work leaves it)."""
    client.xadd(stream, fields)  # type: ignore[arg-type]
    streams.ensure_group(client, stream, group)
    streams.read_new(client, stream, group, consumer, 10)


@pytest.fixture
def stuck(tmp_path: Path, redis_client: redis.Redis, redis_url: str) -> Iterator[LocalStack]:
    """A stack whose intake stream and WhatCounts buffer each hold one claimed entry; only the intake
    consumer's heartbeat is present."""
    stack = LocalStack(tmp_path, redis_url=redis_url, sandbox_url=NO_SANDBOX)
    held_by(redis_client, NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP, INTAKE_CONSUMER, {"message": "{}"})
    buffer = keys.buffer_stream("whatcounts")
    held_by(redis_client, buffer, keys.BUFFER_GROUP, DELIVERY_CONSUMER, {"r": "{}"})
    liveness.beat(redis_client, INTAKE_CONSUMER, liveness.process_token(), ttl_s=600)
    with stack:
        yield stack


def test_the_queue_report_names_the_holders_of_pending_entries_and_the_consumers_alive(
    stuck: LocalStack,
) -> None:
    report = stuck.queue_report()

    assert report["intake_stream"] == 1
    assert report["intake_pending"] == {INTAKE_CONSUMER: 1}
    assert report["buffer_pending"] == {"whatcounts": {DELIVERY_CONSUMER: 1}}
    assert report["alive"] == [INTAKE_CONSUMER]


def test_a_wait_that_runs_out_reports_the_holders_and_the_living_in_its_error(stuck: LocalStack) -> None:
    with pytest.raises(NotSettledError) as raised:
        stuck.wait_settled(timeout_s=0.5)

    message = str(raised.value)
    assert "whatcounts: pending=1" in message
    assert f"'intake_pending': {{'{INTAKE_CONSUMER}': 1}}" in message
    assert f"'buffer_pending': {{'whatcounts': {{'{DELIVERY_CONSUMER}': 1}}}}" in message
    assert f"'alive': ['{INTAKE_CONSUMER}']" in message


def test_a_stack_with_nothing_claimed_reports_no_holders(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str
) -> None:
    with LocalStack(tmp_path, redis_url=redis_url, sandbox_url=NO_SANDBOX) as stack:
        report = stack.queue_report()

    assert (report["intake_pending"], report["buffer_pending"], report["alive"]) == ({}, {}, [])

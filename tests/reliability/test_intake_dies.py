"""A worker whose intake cannot go on exits non-zero with one critical line, rather than look alive
while it takes nothing in: here a publisher LPUSHes onto the intake stream's name, so the key holds a
list and every intake turn would fail with WRONGTYPE."""

from __future__ import annotations

import json

import pytest

from producer.names import NATIVE_INTAKE_STREAM
from tests.support.stacks import StackFactory, only_connections
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(180)]


def critical_lines(log: str) -> list[dict[str, object]]:
    lines = []
    for line in log.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") == "critical":
            lines.append(entry)
    return lines


def test_a_worker_whose_intake_stream_key_holds_a_list_exits_1_with_one_critical_line(
    rstack: StackFactory,
) -> None:
    stack = rstack(config_hook=only_connections("insider"))
    worker = stack.start_worker("w1", concurrency=1)
    mixed_up = stack.redis.pipeline(transaction=True)  # in one step: the loop never sees it missing
    mixed_up.delete(NATIVE_INTAKE_STREAM)
    mixed_up.lpush(NATIVE_INTAKE_STREAM, json.dumps({"email": "a@example.com"}))
    mixed_up.execute()

    wait_for(lambda: not worker.running, timeout_s=90, message="the worker to exit")

    assert worker.proc is not None
    assert worker.proc.returncode == 1, worker.log_tail()
    [line] = critical_lines(worker.log_path.read_text(errors="replace"))
    assert line["event"] == "the intake loop died; stopping the worker so that it is restarted"
    assert "IntakeStoppedError" in str(line.get("exception", ""))
    assert "a key of the intake loop holds another type of value" in str(line.get("exception", ""))

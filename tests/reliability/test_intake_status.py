"""`unsub status` finds a request that died at intake: a publisher's invalid request with a request id,
published raw to the language-neutral stream of a running stack, is dead-lettered by the worker's
intake loop, and the status it wrote is what the real CLI prints (dead, with the reason)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from producer.names import NATIVE_INTAKE_FIELD, NATIVE_INTAKE_STREAM
from tests.support.stacks import StackFactory, only_connections
from tests.support.waiting import wait_for
from worker.pipeline import deadletters

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(180)]

REQUEST_ID = "publisher-bad-1"


def unsub(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNSUB_")}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_a_request_dead_lettered_at_intake_is_found_and_shown_dead_with_its_reason(
    rstack: StackFactory,
) -> None:
    stack = rstack(config_hook=only_connections("insider"))
    stack.start_worker("w1", concurrency=1)
    bad = {"request_id": REQUEST_ID, "email": "not-an-address"}
    stack.redis.xadd(NATIVE_INTAKE_STREAM, {NATIVE_INTAKE_FIELD: json.dumps(bad)})
    wait_for(
        lambda: deadletters.count(stack.redis) and stack.redis.xlen(NATIVE_INTAKE_STREAM) == 0,
        timeout_s=60,
        message="the worker to dead-letter the request",
    )
    config = str(stack.config_path)

    shown = unsub("status", REQUEST_ID, "--config", config)
    as_json = unsub("status", REQUEST_ID, "--config", config, "--json")

    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "dead_lettered" in shown.stdout
    assert "invalid_email" in shown.stdout
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    [delivery] = json.loads(as_json.stdout)[REQUEST_ID]["deliveries"]
    assert (delivery["connection"], delivery["state"], delivery["reason"]) == (
        "intake",
        "dead_lettered",
        "invalid_email",
    )
    assert delivery["message"]


def test_status_of_a_request_nobody_published_says_so_and_exits_1(rstack: StackFactory) -> None:
    stack = rstack(config_hook=only_connections("insider"))

    missing = unsub("status", "never-published", "--config", str(stack.config_path))

    assert missing.returncode == 1
    assert "no such request" in missing.stdout + missing.stderr

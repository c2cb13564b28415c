"""The local stack runs the real system end to end: worker and scheduler processes, Redis, sandbox."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.support.sandbox_fixtures import SandboxClient
from unsub_dev.errors import NotSettledError
from unsub_dev.localstack.stack import LocalStack

pytestmark = pytest.mark.integration


def test_requests_published_to_a_local_stack_reach_every_sandbox_provider(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str, sandbox: SandboxClient
) -> None:
    sandbox.seed(auto_contacts=True)
    with LocalStack(tmp_path, redis_url=redis_url, sandbox_url=sandbox.url) as stack:
        stack.start_worker("w1", concurrency=2)
        stack.start_scheduler()
        with stack.producer() as producer:
            ids = producer.publish_many(
                {"email": f"person{i}@example.com", "scope": "global"} for i in range(20)
            )
        snap = stack.wait_settled(expected_requests=len(ids), timeout_s=90)
    delivered = {c.name: c.counters.get("delivered", 0) for c in snap.connections}
    assert delivered["cc-partner"] == 20, stack.logs()[-3000:]
    assert delivered["insider"] == 20
    events = sandbox.unsubscribes("insider")
    emails = {e for event in events for e in event.get("emails", [event.get("email")])}
    assert {f"person{i}@example.com" for i in range(20)} <= emails


def test_waiting_for_a_stack_with_no_worker_reports_what_is_still_pending(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str, sandbox: SandboxClient
) -> None:
    with LocalStack(tmp_path, redis_url=redis_url, sandbox_url=sandbox.url) as stack:
        with stack.producer() as producer:
            producer.publish({"email": "nobody-works@example.com"})
        with pytest.raises(NotSettledError, match="not settled"):
            stack.wait_settled(expected_requests=1, timeout_s=1)

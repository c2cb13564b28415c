"""The README quick start, stopped and started again: the rotated refresh token must survive it.

``honcho start`` runs the sandbox and the worker; stopping and starting it again gives a fresh
in-memory sandbox but keeps Redis, where the worker stored the refresh token the first sandbox
rotated to. These tests run that cycle with real worker processes.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, only_connections
from unsub_dev.localstack.stack import LocalStack
from worker.adapters.refresh_tokens import read_stored
from worker.pipeline.stats import Snapshot

pytestmark = pytest.mark.integration

SEEDED = ("debora.lang@example.com", "john.byrd@example.com")


def run_once(stack: LocalStack, email: str, requests_so_far: int) -> Snapshot:
    """Start the stack, publish one request to cc-contacts and wait until it is settled."""
    stack.start_worker("w1", concurrency=2)
    stack.start_scheduler()
    with stack.producer() as producer:
        producer.publish_many([{"email": email, "connections": ["cc-contacts"]}])
    return stack.wait_settled(expected_requests=requests_so_far + 1, timeout_s=60)


def delivered(snap: Snapshot) -> int:
    cc = next(c for c in snap.connections if c.name == "cc-contacts")
    return cc.counters.get("delivered", 0)


def test_after_sandbox_and_worker_restart_on_the_same_redis_cc_contacts_still_delivers(
    stack_factory: StackFactory,
    sandbox_factory: Callable[..., SandboxClient],
    redis_client: redis.Redis,
) -> None:
    first_sandbox = sandbox_factory()
    first = stack_factory(sandbox_url=first_sandbox.url, config_hook=only_connections("cc-contacts"))
    run_once(first, SEEDED[0], 0)
    rotated = read_stored(redis_client, "cc-contacts")
    first.stop()
    first_sandbox.server.stop()

    second_sandbox = sandbox_factory()  # a fresh process: it never saw the rotated token
    second = stack_factory(sandbox_url=second_sandbox.url, config_hook=only_connections("cc-contacts"))
    snap = run_once(second, SEEDED[1], 1)

    assert rotated is not None
    assert rotated.token != "sandbox-refresh-0"
    assert delivered(snap) == 2
    assert snap.dead_letters_now == 0
    state = second_sandbox.state("cc_contacts")
    assert SEEDED[1] in state["unsubscribed"]
    # The first sandbox's access token was refused, and the rotated refresh token renewed it.
    assert state["rejected"]["find_contact"] == {"401": 1}
    assert state["token_requests"] == 1
    renewed = read_stored(redis_client, "cc-contacts")
    assert renewed is not None
    assert renewed.token not in (rotated.token, "sandbox-refresh-0")

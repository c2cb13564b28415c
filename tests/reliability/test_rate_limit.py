"""Scenario 5: four worker processes share one connection's rate limit; 429s are absorbed.

The sandbox runs with a recording middleware that stamps every provider request on arrival, so the
check is made where it matters: in no sliding one-second window did the provider see more than the
connection's limit. The sandbox's own limiter is off; it answers a seeded share of requests with 429
(``Retry-After: 1``) instead, and every one of those must end delivered, none dead.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.reliability.conftest import assert_none_lost, wait_finished
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, chain, only_connections, set_connection
from unsub_dev.sandbox.config import load_config
from unsub_dev.sandbox.server import SandboxServer

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(240)]

LIMIT_PER_S = 20
REQUESTS = 120


class ArrivalClock:
    """ASGI middleware: the monotonic arrival time of every request under ``prefix``."""

    def __init__(self, app: Any, arrivals: list[float], prefix: str) -> None:
        self.app = app
        self.arrivals = arrivals
        self.prefix = prefix

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            self.arrivals.append(time.monotonic())
        await self.app(scope, receive, send)


@pytest.fixture
def recorded_sandbox() -> Iterator[tuple[SandboxClient, list[float]]]:
    arrivals: list[float] = []
    server = SandboxServer(load_config(overrides={"auto_contacts": True}))
    server.sandbox.app.add_middleware(ArrivalClock, arrivals=arrivals, prefix="/easytools/")
    server.start()
    client = SandboxClient(server)
    yield client, arrivals
    client.close()
    server.stop()


def busiest_second(arrivals: list[float]) -> int:
    """Most requests that arrived within any window of one second."""
    times = sorted(arrivals)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def test_four_worker_processes_never_exceed_the_connection_limit_and_absorb_every_429(
    rstack: StackFactory, recorded_sandbox: tuple[SandboxClient, list[float]]
) -> None:
    sandbox, arrivals = recorded_sandbox
    sandbox.faults(easytools={"rate_limit_per_minute": 0, "error_rate": 0.05, "error_status": 429, "seed": 5})
    stack = rstack(
        sandbox_url=sandbox.url,
        config_hook=chain(
            only_connections("easytools"), set_connection("easytools", rate_limit=f"{LIMIT_PER_S}/second")
        ),
    )
    stack.start_worker("w1", concurrency=2)
    stack.start_worker("w2", concurrency=2)
    stack.start_scheduler()
    emails = {f"rate-{i}": f"rate{i}@example.com" for i in range(REQUESTS)}
    with stack.producer() as producer:
        producer.publish_many(({"request_id": r, "email": e} for r, e in emails.items()), chunk_size=10)

    wait_finished(stack, emails, timeout_s=150)

    outcomes = assert_none_lost(stack, sandbox, emails, ["easytools"])
    assert outcomes.states == {"delivered": REQUESTS}
    state = sandbox.state("easytools")
    throttled = sum(by.get("429", 0) for by in state["rejected"].values())
    print(
        f"rate limit: {len(arrivals)} requests, busiest second {busiest_second(arrivals)}, 429s {throttled}"
    )
    assert len(arrivals) >= 2 * REQUESTS, "every record needs a lookup and an unsubscribe"
    assert throttled > 0, "429s were injected and met"
    assert busiest_second(arrivals) <= LIMIT_PER_S
    stats = stack.snapshot()
    assert stats.dead_letters_now == 0

"""No head-of-line blocking: a connection working through a rate-limited backlog never holds the
worker's processes, so another connection's requests are delivered while the backlog still waits.

One real `unsub worker` (two pool processes) and the scheduler; WhatCounts may make two calls a
second, one record a call, so its backlog takes a while; Insider has no limit.
"""

from __future__ import annotations

import pytest

from tests.reliability.conftest import assert_none_lost, wait_finished
from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, chain, only_connections, set_connection
from tests.support.waiting import wait_for
from unsub_dev.localstack.stack import LocalStack
from worker.pipeline import status
from worker.pipeline.status import DeliveryState

pytestmark = [pytest.mark.reliability, pytest.mark.integration, pytest.mark.timeout(240)]

BACKLOG = 30
OTHERS = 3


def delivered(stack: LocalStack, request_ids: list[str]) -> list[str]:
    done = []
    for rid in request_ids:
        found = status.read(stack.redis, rid)
        if found is not None and all(d.state is DeliveryState.DELIVERED for d in found.deliveries):
            done.append(rid)
    return done


def test_a_rate_limited_backlog_on_one_connection_does_not_hold_back_another_connection(
    rstack: StackFactory, sandbox: SandboxClient
) -> None:
    sandbox.seed(auto_contacts=True)
    stack = rstack(
        config_hook=chain(
            only_connections("whatcounts", "insider"),
            set_connection("whatcounts", rate_limit="2/second", batch_size=1),
        )
    )
    stack.start_worker("w1", concurrency=2)
    stack.start_scheduler()
    backlog = {f"slow-{i}": f"slow{i}@example.com" for i in range(BACKLOG)}
    others = {f"other-{i}": f"other{i}@example.com" for i in range(OTHERS)}
    with stack.producer() as producer:
        producer.publish_many(
            {"request_id": r, "email": e, "connections": ["whatcounts"]} for r, e in backlog.items()
        )
        wait_for(lambda: delivered(stack, list(backlog)), timeout_s=60, message="the backlog to start")
        producer.publish_many(
            {"request_id": r, "email": e, "connections": ["insider"]} for r, e in others.items()
        )

    wait_for(
        lambda: len(delivered(stack, list(others))) == OTHERS,
        timeout_s=90,
        message="the other connection's requests to be delivered",
    )
    backlog_done_then = len(delivered(stack, list(backlog)))

    assert backlog_done_then < BACKLOG, "the backlog finished first: the test proved nothing"
    wait_finished(stack, [*backlog, *others], timeout_s=120)
    assert_none_lost(stack, sandbox, backlog, ["whatcounts"])
    assert_none_lost(stack, sandbox, others, ["insider"])

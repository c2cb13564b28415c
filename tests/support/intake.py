"""Taking requests in from tests: straight through ``run_intake``, or through the intake loop."""

from __future__ import annotations

from typing import Any

import redis

from worker.pipeline.intake import IntakeReport, items_from_payloads, run_intake
from worker.pipeline.intake_loop import IntakeLoop
from worker.pipeline.runtime import Runtime


def take_in(rt: Runtime, payload: Any, origin: str = "task:t") -> IntakeReport:
    """What a message with ``payload`` (one request or a list) becomes, in one transaction."""
    payloads = payload if isinstance(payload, list) else [payload]
    return run_intake(rt, items_from_payloads(payloads, origin))


def drain_intake(rt: Runtime, consumer: str = "test:intake") -> IntakeReport:
    """Run the intake loop in this process until both doors are empty, reading the stream as a
    worker does (``worker.redis_client.redis_for``: bytes that are not UTF-8 survive the reply)."""
    pool = rt.redis.connection_pool
    kwargs = {**pool.connection_kwargs, "encoding_errors": "surrogateescape"}
    client = redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )
    try:
        return IntakeLoop(rt, consumer=consumer, client=client).drain()
    finally:
        client.close()

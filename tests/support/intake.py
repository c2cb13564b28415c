"""Taking requests in from tests: straight through ``run_intake``, or through the intake loop."""

from __future__ import annotations

from typing import Any

from worker.pipeline.intake import IntakeReport, items_from_payloads, run_intake
from worker.pipeline.intake_loop import IntakeLoop
from worker.pipeline.runtime import Runtime


def take_in(rt: Runtime, payload: Any, origin: str = "task:t") -> IntakeReport:
    """What a message with ``payload`` (one request or a list) becomes, in one transaction."""
    payloads = payload if isinstance(payload, list) else [payload]
    return run_intake(rt, items_from_payloads(payloads, origin))


def drain_intake(rt: Runtime, consumer: str = "test:intake") -> IntakeReport:
    """Run the intake loop in this process until both doors are empty."""
    return IntakeLoop(rt, consumer=consumer, client=rt.redis).drain()

"""Celery tasks: each a thin shell around a plain function of the pipeline.

Task names are part of the contract (``producer.names``, ``worker.pipeline.trigger``); their
arguments are JSON. None of them raises for bad input: bad input becomes a dead letter.
"""

from __future__ import annotations

import time
from typing import Any, Final

from celery import Task
from celery.exceptions import Reject

from producer import names
from worker.app import app
from worker.logs import bind, get_logger
from worker.pipeline import delivery, intake, native, tokens, trigger
from worker.pipeline.runtime import get_runtime

log = get_logger(__name__)

#: Wait before a failed intake message goes back to the queue.
REQUEUE_PAUSE_S: Final = 1.0


@app.task(name="unsub.ping")  # type: ignore[untyped-decorator]
def ping() -> str:
    """Round trip used by tests and `unsub health --deep` to prove a worker consumes."""
    return "pong"


@app.task(bind=True, name=names.INTAKE_TASK)  # type: ignore[untyped-decorator]
def intake_task(self: Task, payload: Any) -> dict[str, int]:
    """Take in one request or a list of requests (contract v1); returns the intake counts.

    Bad input never fails it (it becomes a dead letter). Anything else that fails it (its Redis
    unreachable, a bug) puts the message back on the queue: Celery would otherwise acknowledge a
    failed task's message and the requests would be lost, while taking one in twice is harmless
    (intake is idempotent by request id).
    """
    rt = get_runtime()
    with bind(task_id=self.request.id, task=names.INTAKE_TASK):
        items = intake.items_from_task_payload(payload, origin=f"task:{self.request.id}")
        try:
            report, touched = intake.run_intake(rt, items)
        except Exception as exc:
            log.error("intake failed; the message goes back to the queue", error=type(exc).__name__)
            time.sleep(REQUEUE_PAUSE_S)  # no hot loop while Redis is away
            raise Reject(exc, requeue=True) from exc
        _trigger_full(rt, touched)
    return report.as_dict()


@app.task(bind=True, name=trigger.NATIVE_INTAKE_TASK)  # type: ignore[untyped-decorator]
def intake_native_task(self: Task) -> dict[str, int]:
    """Drain the language-neutral intake stream."""
    rt = get_runtime()
    with bind(task_id=self.request.id, task=trigger.NATIVE_INTAKE_TASK):
        report, touched = native.drain_native(rt, budget_s=rt.settings.drain_budget_s)
        _trigger_full(rt, touched)
    return report.as_dict()


@app.task(bind=True, name=trigger.DELIVER_TASK)  # type: ignore[untyped-decorator]
def deliver_task(self: Task, connection: str) -> dict[str, Any]:
    """Drain one connection's buffer; returns the counts (stored in the result backend)."""
    with bind(task_id=self.request.id, task=trigger.DELIVER_TASK, connection=connection):
        return delivery.drain(get_runtime(), connection, task_id=self.request.id).as_dict()


@app.task(bind=True, name=trigger.REFRESH_TOKEN_TASK)  # type: ignore[untyped-decorator]
def refresh_token_task(self: Task, connection: str) -> dict[str, Any]:
    """Renew one connection's access token ahead of its expiry (queued by the scheduler)."""
    with bind(task_id=self.request.id, task=trigger.REFRESH_TOKEN_TASK, connection=connection):
        return tokens.refresh_connection_token(get_runtime(), connection)


def _trigger_full(rt: Any, connections: set[str]) -> None:
    """Start delivery at once where a full batch waits; the scheduler flushes the rest."""
    from worker.pipeline import buffer

    for name in connections:
        conn = rt.settings.connection(name)
        if buffer.backlog(rt.redis, name) >= rt.adapter(conn).max_batch_size:
            trigger.maybe_trigger(rt, conn)

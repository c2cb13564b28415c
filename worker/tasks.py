"""Celery tasks: each a thin shell around a plain function of the pipeline.

Task names are part of the contract (``producer.names``, ``worker.pipeline.trigger``); their
arguments are JSON. Intake is not a Celery task on the worker side: the intake loop reads the
``unsub.intake`` queue itself (``worker.intake_step``) and answers ``unsub.ping`` there.
"""

from __future__ import annotations

from typing import Any

from celery import Task

from worker.app import app, current_runtime
from worker.logs import bind
from worker.pipeline import delivery, tokens, trigger


@app.task(name="unsub.ping")  # type: ignore[untyped-decorator]
def ping() -> str:
    """Round trip on the control queue: proves a worker's Celery consumer takes tasks."""
    return "pong"


@app.task(bind=True, name=trigger.DELIVER_TASK)  # type: ignore[untyped-decorator]
def deliver_task(self: Task, connection: str) -> dict[str, Any]:
    """Drain one connection's buffer; returns the counts (stored in the result backend)."""
    with bind(task_id=self.request.id, task=trigger.DELIVER_TASK, connection=connection):
        return delivery.drain(current_runtime(), connection, task_id=self.request.id).as_dict()


@app.task(bind=True, name=trigger.REFRESH_TOKEN_TASK)  # type: ignore[untyped-decorator]
def refresh_token_task(self: Task, connection: str) -> dict[str, Any]:
    """Renew one connection's access token ahead of its expiry (queued by the scheduler)."""
    with bind(task_id=self.request.id, task=trigger.REFRESH_TOKEN_TASK, connection=connection):
        return tokens.refresh_connection_token(current_runtime(), connection)

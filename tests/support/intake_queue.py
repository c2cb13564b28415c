"""Read the Celery task messages waiting on the real intake queue (a Redis list)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import redis

from producer import names


@dataclass(frozen=True)
class QueuedTask:
    task: str
    argsrepr: str
    kwargsrepr: str
    payload: Any
    raw: str

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.payload if isinstance(self.payload, list) else [self.payload]


def queued_tasks(client: redis.Redis) -> list[QueuedTask]:
    """Oldest first (kombu LPUSHes and the worker pops from the right)."""
    found = []
    for raw in reversed(client.lrange(names.INTAKE_QUEUE, 0, -1)):
        envelope = json.loads(raw)
        headers = envelope["headers"]
        args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        text = raw.decode() if isinstance(raw, bytes) else raw
        found.append(QueuedTask(headers["task"], headers["argsrepr"], headers["kwargsrepr"], args[0], text))
    return found


def queued_requests(client: redis.Redis) -> list[dict[str, Any]]:
    return [r for task in queued_tasks(client) for r in task.requests]

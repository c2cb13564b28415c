"""Which process a stream consumer is: its heartbeat (``worker.pipeline.liveness``) names the pid."""

from __future__ import annotations

import redis

from worker import keys


def consumer_pid(client: redis.Redis, consumer: str) -> int | None:
    """The pid in the consumer's heartbeat (``host|pid|started``), or None once it lapsed."""
    value = client.get(keys.consumer_alive(consumer))
    if value is None:
        return None
    text = value.decode() if isinstance(value, bytes) else str(value)
    pid = text.split("|")[1] if text.count("|") >= 2 else ""
    return int(pid) if pid.isdigit() else None

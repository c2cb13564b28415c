"""What a worker process holds for the pipeline: settings, Redis, adapters, gates, breakers.

Built on first use in each process (after the prefork fork), never at import time.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import redis

from worker.adapters.base import Adapter, AdapterDeps
from worker.pipeline.breaker import Breaker
from worker.pipeline.observe import CallRecorder
from worker.pipeline.ratelimit import RedisGate
from worker.redis_client import redis_for
from worker.settings import CcPartnerConnection, Connection, Settings, get_settings

AdapterFactory = Callable[[Connection, AdapterDeps], Adapter]
TaskSender = Callable[[str, list[object], str], None]


def _default_adapter_factory(conn: Connection, deps: AdapterDeps) -> Adapter:
    from worker.adapters import build_adapter

    return build_adapter(conn, deps)


def _default_sender(name: str, args: list[object], queue: str) -> None:
    from worker.pipeline.trigger import send_with_app

    send_with_app(name, args, queue)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    adapter_factory: AdapterFactory = _default_adapter_factory
    #: Queues a Celery task by name: ``send_task(name, args, queue)``.
    send_task: TaskSender = _default_sender
    rng: random.Random = field(default_factory=random.Random)
    consumer_name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _adapters: dict[str, Adapter] = field(default_factory=dict)
    _recorders: dict[str, CallRecorder] = field(default_factory=dict)

    def adapter(self, conn: Connection) -> Adapter:
        adapter = self._adapters.get(conn.name)
        if adapter is None:
            adapter = self.adapter_factory(conn, self.deps(conn))
            self._adapters[conn.name] = adapter
        return adapter

    def deps(self, conn: Connection) -> AdapterDeps:
        """The dependencies an adapter of ``conn`` gets: shared gates, this process's recorder."""
        token_limit = conn.token_rate_limit if isinstance(conn, CcPartnerConnection) else None
        return AdapterDeps(
            redis=self.redis,
            gate=RedisGate(self.redis, conn.name, conn.rate_limit),
            token_gate=RedisGate(self.redis, f"{conn.name}:token", token_limit),
            observer=self.recorder(conn),
        )

    def recorder(self, conn: Connection) -> CallRecorder:
        return self._recorders.setdefault(conn.name, CallRecorder())

    def breaker(self, conn: Connection) -> Breaker:
        return Breaker(self.redis, conn.name, conn.breaker)

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def get_runtime() -> Runtime:
    """This process's runtime, built on first use (again after a fork)."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        settings = get_settings()
        _runtime = Runtime(settings=settings, redis=redis_for(settings.state_redis_url))
        _runtime_pid = os.getpid()
    return _runtime


def use_runtime(runtime: Runtime | None) -> None:
    """Install a runtime built elsewhere (tests), or forget it."""
    global _runtime, _runtime_pid
    _runtime, _runtime_pid = runtime, (os.getpid() if runtime else None)

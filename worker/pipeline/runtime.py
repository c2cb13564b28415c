"""What a process holds for the pipeline: settings, Redis, adapters, gates, breakers, its keeper.

The Celery app builds one per worker process after the fork (``worker.app``), giving it how to queue
tasks and how to learn that the worker is stopping; the CLI and the scheduler build their own. Nothing
here is a process global.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, Protocol

import redis

from worker.adapters.base import Adapter, AdapterDeps
from worker.pipeline.breaker import Breaker
from worker.pipeline.claims import ClaimState
from worker.pipeline.liveness import HEARTBEAT_S, Keeper, process_token
from worker.pipeline.observe import CallRecorder
from worker.pipeline.ratelimit import RedisGate
from worker.providers import build_adapter, provider
from worker.settings import Connection, Settings

AdapterFactory = Callable[[Connection, AdapterDeps], Adapter]


class TaskSender(Protocol):
    """Queues a Celery task by name (``countdown``: not before that many seconds from now)."""

    def __call__(
        self, name: str, args: list[object], queue: str, *, countdown: float | None = None
    ) -> None: ...


#: Inside a batch, a call waits at most this long for its turn under the shared rate limit; a longer
#: wait puts the record back with a due time (a drain never occupies a process waiting).
IN_BATCH_MAX_WAIT_S: Final = 1.0
#: Held claims are refreshed at least this many times per ``reclaim_idle_s``...
CLAIM_REFRESHES_PER_IDLE: Final = 4
#: ...but not more often than this.
MIN_KEEPER_INTERVAL_S: Final = 0.25


def keeper_interval_s(reclaim_idle_s: float) -> float:
    """How often the keeper beats and refreshes held claims: well inside both the liveness window
    and ``reclaim_idle_s`` (a few refreshes per idle period), never busier than a few times a second."""
    return max(min(HEARTBEAT_S, reclaim_idle_s / CLAIM_REFRESHES_PER_IDLE), MIN_KEEPER_INTERVAL_S)


def _never() -> bool:
    return False


def default_consumer_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    send_task: TaskSender
    #: True once the worker is shutting down (a drain then hands back what it holds).
    stop_requested: Callable[[], bool] = _never
    adapter_factory: AdapterFactory = build_adapter
    rng: random.Random = field(default_factory=random.Random)
    #: This process's name as a consumer of the buffer streams (stable per worker and process index).
    consumer_name: str = field(default_factory=default_consumer_name)
    #: Identifies this process in its heartbeat (see ``liveness.claim_name``).
    keeper_token: str = field(default_factory=process_token)
    claim_state: ClaimState = field(default_factory=ClaimState)
    _adapters: dict[str, Adapter] = field(default_factory=dict)
    _gates: dict[str, RedisGate] = field(default_factory=dict)
    _recorders: dict[str, CallRecorder] = field(default_factory=dict)
    _keeper: Keeper | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def adapter(self, conn: Connection) -> Adapter:
        adapter = self._adapters.get(conn.name)
        if adapter is None:
            adapter = self.adapter_factory(conn, self.deps(conn))
            self._adapters[conn.name] = adapter
        return adapter

    def gate(self, conn: Connection) -> RedisGate:
        """The connection's shared rate limit (one per process and connection)."""
        gate = self._gates.get(conn.name)
        if gate is None:
            gate = RedisGate(self.redis, conn.name, conn.rate_limit, max_wait_s=IN_BATCH_MAX_WAIT_S)
            self._gates[conn.name] = gate
        return gate

    def deps(self, conn: Connection) -> AdapterDeps:
        """The dependencies an adapter of ``conn`` gets: shared gates, this process's recorder."""
        token_limit = provider(conn.type).token_rate_limit(conn)
        return AdapterDeps(
            redis=self.redis,
            gate=self.gate(conn),
            token_gate=RedisGate(self.redis, f"{conn.name}:token", token_limit),
            observer=self.recorder(conn),
        )

    def recorder(self, conn: Connection) -> CallRecorder:
        return self._recorders.setdefault(conn.name, CallRecorder())

    def breaker(self, conn: Connection) -> Breaker:
        return Breaker(self.redis, conn.name, conn.breaker)

    def keeper(self) -> Keeper:
        """This process's heartbeat and claim keeper, started on first use."""
        with self._lock:
            if self._keeper is None:
                interval_s = keeper_interval_s(self.settings.reclaim_idle_s)
                self._keeper = Keeper(
                    self.redis, self.consumer_name, token=self.keeper_token, interval_s=interval_s
                ).start()
            return self._keeper

    def close(self) -> None:
        for adapter in self._adapters.values():
            adapter.close()
        self._adapters.clear()
        if self._keeper is not None:
            self._keeper.stop()
            self._keeper = None

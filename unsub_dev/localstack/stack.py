"""A whole local system: workers and the scheduler against one Redis and one sandbox.

The demo, the end-to-end tests, the reliability suite and the benchmarks all drive the system
through this class, so they start, observe and stop it the same way::

    with LocalStack(workdir, redis_url=url, sandbox_url=sandbox.url) as stack:
        stack.start_worker("w1", concurrency=2)
        stack.start_scheduler()
        ids = stack.producer().publish_many(requests)
        snapshot = stack.wait_settled(expected_requests=len(ids), timeout_s=60)

"Settled" means every published request went through intake (the intake lists and stream are
empty) and no connection holds a record that is waiting, being delivered or waiting for a retry:
each record reached an outcome. Celery's own queues hold only hints (delivery triggers) and do not
count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import redis

from producer.client import Producer
from producer.connect import redis_client
from producer.names import NATIVE_INTAKE_STREAM
from unsub_dev.errors import NotSettledError
from unsub_dev.localstack.config import local_config, write_config
from unsub_dev.localstack.processes import ManagedProcess, scheduler_process, worker_process
from worker import keys
from worker.pipeline import stats
from worker.pipeline.pump import intake_lists
from worker.providers import celery_queues
from worker.redis_client import text
from worker.settings import Settings, load_settings

SETTLE_POLL_INTERVAL_S: Final = 0.2
DEFAULT_SETTLE_TIMEOUT_S: Final = 120.0
#: Where kombu's Redis transport keeps messages a worker took and has not acknowledged, and the lock
#: of its restore sweep (reported when a wait runs out).
UNACKED_HASH: Final = "unacked"
UNACKED_MUTEX: Final = "unacked_mutex"


@dataclass
class LocalStack:
    """Config, processes and observation of one local run. Stops everything it started."""

    workdir: Path
    redis_url: str
    sandbox_url: str
    fast: bool = True
    settings_overrides: dict[str, Any] = field(default_factory=dict)
    config_hook: Callable[[dict[str, Any]], None] | None = None
    processes: dict[str, ManagedProcess] = field(default_factory=dict)
    _client: redis.Redis | None = None
    _settings: Settings | None = None

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        data = local_config(self.sandbox_url, self.redis_url, fast=self.fast)
        data.setdefault("health_dir", str(self.workdir / "health"))
        data.setdefault("log_format", "json")
        data.update(self.settings_overrides)
        if self.config_hook is not None:
            self.config_hook(data)
        self.config_path = write_config(self.workdir / "unsub.yaml", data)

    # -- configuration -------------------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    @property
    def redis(self) -> redis.Redis:
        if self._client is None:
            self._client = redis_client(self.redis_url, **self.settings.sentinel)
        return self._client

    def connection_names(self) -> list[str]:
        return [conn.name for conn in self.settings.connections]

    # -- processes -----------------------------------------------------------------------------
    def start_worker(
        self,
        name: str = "w1",
        *,
        queues: str = "all",
        concurrency: int = 2,
        env: dict[str, str] | None = None,
        ready_timeout_s: float = 60.0,
    ) -> ManagedProcess:
        proc = worker_process(
            self.config_path, self.workdir, name=name, queues=queues, concurrency=concurrency, env=env
        )
        self.processes[name] = proc
        return proc.start(ready_timeout_s=ready_timeout_s)

    def start_scheduler(self, *, env: dict[str, str] | None = None) -> ManagedProcess:
        def ticking() -> bool:
            return bool(self.redis.exists(keys.SCHEDULER_HEARTBEAT))

        proc = scheduler_process(self.config_path, self.workdir, ready=ticking, env=env)
        self.processes["scheduler"] = proc
        return proc.start()

    def stop(self) -> None:
        for proc in reversed(list(self.processes.values())):
            proc.stop()
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> LocalStack:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def logs(self) -> str:
        """Every process's log so far (for failure messages and secret scans)."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    # -- publishing ----------------------------------------------------------------------------
    def producer(self, **options: Any) -> Producer:
        return Producer(broker_url=self.redis_url, **{**self.settings.sentinel, **options})

    # -- observation ---------------------------------------------------------------------------
    def snapshot(self) -> stats.Snapshot:
        return stats.collect(self.redis, self.settings)

    def queued_messages(self) -> int:
        """Intake messages not yet taken in: waiting in the intake lists or in the intake stream
        (an entry leaves the stream in the transaction that records its requests)."""
        pipe = self.redis.pipeline()
        for key in intake_lists():
            pipe.llen(key)
        pipe.xlen(NATIVE_INTAKE_STREAM)
        return sum(int(n) for n in pipe.execute())

    def celery_tasks_pending(self) -> int:
        """Celery tasks queued or taken but not acknowledged (a killed worker's come back after the
        visibility timeout): what to wait for before comparing the result backend with the counters."""
        pipe = self.redis.pipeline()
        for key in celery_queues():
            pipe.llen(key)
        pipe.hlen(UNACKED_HASH)
        return sum(int(n) for n in pipe.execute())

    def queue_report(self) -> dict[str, Any]:
        """For failure messages: lengths of every queue, unacknowledged messages and the restore
        lock; the intake stream's and each buffer's pending entries per consumer; and the consumers
        whose liveness heartbeat is present (a holder without one is dead and will be taken over)."""
        pipe = self.redis.pipeline()
        names = [*intake_lists(), *celery_queues()]
        for key in names:
            pipe.llen(key)
        pipe.xlen(NATIVE_INTAKE_STREAM)
        pipe.hlen(UNACKED_HASH)
        pipe.pttl(UNACKED_MUTEX)
        replies = [int(n) for n in pipe.execute()]
        report: dict[str, Any] = {
            name.replace("\x06\x16", "~"): n for name, n in zip(names, replies, strict=False) if n
        }
        report["intake_stream"] = replies[len(names)]
        report["unacked"] = replies[len(names) + 1]
        report["unacked_mutex_pttl_ms"] = replies[len(names) + 2]
        report["intake_pending"] = pending_by_consumer(
            self.redis, NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP
        )
        buffers = {
            c: pending_by_consumer(self.redis, keys.buffer_stream(c), keys.BUFFER_GROUP)
            for c in self.connection_names()
        }
        report["buffer_pending"] = {c: held for c, held in buffers.items() if held}
        report["alive"] = alive_consumers(self.redis)
        return report

    def is_settled(self, snapshot: stats.Snapshot, expected_requests: int | None = None) -> bool:
        if expected_requests is not None and snapshot.intake.get("requests", 0) < expected_requests:
            return False
        return all(c.pending == 0 and c.waiting_retries == 0 for c in snapshot.connections)

    def wait_settled(
        self, *, expected_requests: int | None = None, timeout_s: float = DEFAULT_SETTLE_TIMEOUT_S
    ) -> stats.Snapshot:
        """Poll until settled twice in a row (no record between intake and buffer slips through)."""
        deadline = time.monotonic() + timeout_s
        settled_once = False
        while True:
            snap = self.snapshot()
            if self.is_settled(snap, expected_requests) and self.queued_messages() == 0:
                if settled_once:
                    return snap
                settled_once = True
            else:
                settled_once = False
            if time.monotonic() > deadline:
                queues = self.queue_report()
                raise NotSettledError(
                    f"not settled after {timeout_s:.0f}s: {_describe(snap)}; queues={queues}"
                )
            time.sleep(SETTLE_POLL_INTERVAL_S)


def pending_by_consumer(client: redis.Redis, stream: str, group: str) -> dict[str, int]:
    """How many entries of ``stream`` each consumer of ``group`` holds unacknowledged (none: {})."""
    try:
        summary = client.xpending(stream, group)
    except redis.ResponseError:  # no stream or no group yet
        return {}
    held = {text(c["name"]): int(c["pending"]) for c in summary.get("consumers") or []}
    return {name: n for name, n in sorted(held.items()) if n}


def alive_consumers(client: redis.Redis) -> list[str]:
    """Consumers whose liveness heartbeat key is present."""
    prefix = keys.consumer_alive("")
    return sorted(text(k)[len(prefix) :] for k in client.scan_iter(match=f"{prefix}*", count=1000))


def _describe(snap: stats.Snapshot) -> str:
    busy = [
        f"{c.name}: pending={c.pending} waiting_retries={c.waiting_retries} breaker={c.breaker}"
        for c in snap.connections
        if c.pending or c.waiting_retries
    ]
    return f"intake={snap.intake}; " + ("; ".join(busy) or "connections idle")

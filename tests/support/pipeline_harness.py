"""A runtime over the real test Redis with scripted adapters, for in-process pipeline tests."""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from worker.adapters.base import AdapterDeps, Outcome
from worker.pipeline.runtime import Runtime
from worker.records import DeliveryRecord
from worker.settings import Connection, Settings, load_settings

Script = Callable[[Sequence[DeliveryRecord]], list[Outcome]]


def deliver_all(batch: Sequence[DeliveryRecord]) -> list[Outcome]:
    return [Outcome.delivered(status=200) for _ in batch]


@dataclass
class ScriptedAdapter:
    """Delivers as its script says; records every call it is given."""

    connection: Connection
    deps: AdapterDeps
    max_batch_size: int = 3
    script: Script = deliver_all
    calls: list[list[str]] = field(default_factory=list)

    def batch_key(self, record: DeliveryRecord) -> Hashable:
        return record.target

    def precheck(self, record: DeliveryRecord) -> Outcome | None:
        if record.email.startswith("nokey"):
            return Outcome.dead("missing_customer_key", "no customer key")
        return None

    def deliver(self, batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        self.calls.append([r.email for r in batch])
        self.deps.observer.on_call("unsubscribe", 200, 0.01)
        return self.script(batch)

    def close(self) -> None:
        return None


WHATCOUNTS = {
    "name": "wc",
    "type": "whatcounts",
    "base_url": "http://127.0.0.1:1/whatcounts",
    "realm": "r",
    "password": "pw-123456",
    "default_list_id": "5",
    "breaker": {"failure_threshold": 2, "cooldown_s": 30, "max_cooldown_s": 120},
    "retry": {"max_attempts": 3, "base_s": 1, "cap_s": 10, "max_age_s": 3600},
}
INSIDER = {
    "name": "ins",
    "type": "insider",
    "base_url": "http://127.0.0.1:1/insider",
    "partner_name": "brand",
    "token": "tok-123456",
    "uploader_email": "ops@example.com",
}


@dataclass
class PipelineHarness:
    rt: Runtime
    adapters: dict[str, ScriptedAdapter]
    sent: list[tuple[str, list[object], str]]

    @property
    def redis(self) -> redis.Redis:
        return self.rt.redis

    def adapter(self, name: str) -> ScriptedAdapter:
        return self.adapters[name]


@pytest.fixture
def make_harness(redis_client: redis.Redis, redis_url: str) -> Iterator[Callable[..., PipelineHarness]]:
    made: list[Runtime] = []

    def make(connections: list[dict[str, Any]] | None = None, **overrides: Any) -> PipelineHarness:
        settings: Settings = load_settings(
            broker_url=redis_url,
            connections=connections if connections is not None else [WHATCOUNTS, INSIDER],
            **{"reclaim_idle_s": 1, **overrides},
        )
        adapters: dict[str, ScriptedAdapter] = {}
        sent: list[tuple[str, list[object], str]] = []

        def factory(conn: Connection, deps: AdapterDeps) -> ScriptedAdapter:
            adapters[conn.name] = ScriptedAdapter(conn, deps)
            return adapters[conn.name]

        rt = Runtime(
            settings=settings,
            redis=redis_client,
            adapter_factory=factory,  # type: ignore[arg-type]
            rng=random.Random(7),
            send_task=lambda name, args, queue, **_: sent.append((name, args, queue)),
        )
        for conn in settings.connections:
            rt.adapter(conn)
        made.append(rt)
        return PipelineHarness(rt, adapters, sent)

    yield make
    for rt in made:  # stops each runtime's keeper thread, which would beat into the next test's DB
        rt.close()


@pytest.fixture
def harness(make_harness: Callable[..., PipelineHarness]) -> PipelineHarness:
    return make_harness()

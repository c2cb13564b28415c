"""The provider registry: one list of providers, and a sixth provider added with one module and one line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import respx

from producer import names
from producer.contract import parse_request
from tests.support import acme_provider
from tests.support.intake import take_in
from worker import providers
from worker.adapters.base import AdapterDeps
from worker.pipeline import expand
from worker.pipeline.delivery import drain
from worker.pipeline.runtime import Runtime
from worker.providers import build_adapter
from worker.records import DeliveryRecord
from worker.settings import load_settings

ACME = {
    "name": "acme-main",
    "type": "acme",
    "base_url": "https://api.acme.test/v1",
    "token": "acme-token-123456",
}


@pytest.fixture
def acme() -> Iterator[None]:
    providers.register(acme_provider.PROVIDER)  # the one registration line
    yield
    providers.unregister("acme")


def test_every_provider_module_in_the_registry_defines_a_complete_provider() -> None:
    for module, registered in zip(providers.PROVIDER_MODULES, providers.all_providers(), strict=True):
        assert module.rsplit(".", 1)[1] == registered.type
        assert registered.connection.model_fields["type"].annotation is not str  # narrowed to its own type
        assert registered.queue == names.delivery_queue(registered.type)


def test_the_settings_queues_and_worker_options_all_come_from_the_registry() -> None:
    from worker.app import celery_config
    from worker.cli.worker import _queues

    settings = load_settings()
    conf = celery_config(settings)

    assert {q.name for q in conf["task_queues"]} == {names.INTAKE_QUEUE, names.CONTROL_QUEUE} | {
        p.queue for p in providers.all_providers()
    }
    for provider_type in providers.types():
        assert names.delivery_queue(provider_type) in _queues(provider_type)[0]


def test_a_sixth_provider_is_one_module_and_one_registration_line(
    acme: None, redis_client: redis.Redis, redis_url: str
) -> None:
    settings = load_settings(broker_url=redis_url, connections=[ACME])
    [conn] = settings.connections
    request = parse_request({"email": "jane@example.com", "request_id": "acme-1", "scope": "list"})

    [record] = expand.plan(request, settings, 1_700_000_000.0)

    assert isinstance(conn, acme_provider.AcmeConnection)
    assert isinstance(record, DeliveryRecord)
    assert record.target == "account"
    assert names.delivery_queue("acme") in providers.celery_queues()
    adapter = build_adapter(conn, AdapterDeps(redis=redis_client))
    assert isinstance(adapter, acme_provider.AcmeAdapter)
    adapter.close()


@respx.mock
def test_the_pipeline_delivers_to_the_sixth_provider_through_its_own_adapter(
    acme: None, redis_client: redis.Redis, redis_url: str
) -> None:
    seen: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json={"ok": True})

    respx.post("https://api.acme.test/v1/unsubscribe").mock(side_effect=answer)
    settings = load_settings(broker_url=redis_url, connections=[ACME])
    rt = Runtime(settings=settings, redis=redis_client, send_task=lambda name, args, queue, **_: None)

    take_in(rt, [{"email": f"p{i}@example.com", "connections": ["acme-main"]} for i in range(3)])
    report = drain(rt, "acme-main")
    rt.close()

    assert report.delivered == 3
    assert [sorted(body["emails"]) for body in seen] == [
        ["p0@example.com", "p1@example.com", "p2@example.com"]
    ]


def test_a_type_no_provider_registered_is_refused_by_the_settings() -> None:
    from worker.errors import ConfigError

    with pytest.raises(ConfigError, match="type"):
        load_settings(connections=[{**ACME, "type": "acme"}])

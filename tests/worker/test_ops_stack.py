"""Operations against a running system: Flower and the metrics exporter with real worker processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from tests.support.sandbox_fixtures import SandboxClient
from tests.support.waiting import wait_for
from unsub_dev.localstack.redis_server import free_port
from unsub_dev.localstack.stack import LocalStack

pytestmark = pytest.mark.integration

FLOWER_AUTH = ("ops", "flower-secret-pw")
REQUESTS = 40


@pytest.fixture
def stack(
    tmp_path: Path, redis_client: redis.Redis, redis_url: str, sandbox: SandboxClient
) -> Iterator[LocalStack]:
    sandbox.seed(auto_contacts=True)
    overrides = {"flower_user": FLOWER_AUTH[0], "flower_password": FLOWER_AUTH[1]}
    with LocalStack(
        tmp_path, redis_url=redis_url, sandbox_url=sandbox.url, settings_overrides=overrides
    ) as s:
        s.start_worker("w1", concurrency=1)
        s.start_worker("w2", concurrency=1)
        s.start_scheduler()
        yield s


def _serve(stack: LocalStack, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (stack.workdir / f"{args[0]}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", *args, "--config", str(stack.config_path), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return proc, f"http://127.0.0.1:{port}"


def _get(url: str, **kwargs: Any) -> httpx.Response | None:
    try:
        response = httpx.get(url, timeout=5, **kwargs)
    except httpx.HTTPError:
        return None
    return response if response.status_code == 200 else None


def _publish_mix(stack: LocalStack) -> None:
    with stack.producer() as producer:
        producer.publish_many(
            {"email": f"ops{i}@example.com", "reason": "ops test", "source": "Contact"}
            for i in range(REQUESTS)
        )
    stack.wait_settled(expected_requests=REQUESTS, timeout_s=120)


def test_flower_shows_the_workers_and_delivery_tasks_with_counts_and_masked_emails(stack: LocalStack) -> None:
    proc, url = _serve(stack, "flower")
    try:
        wait_for(
            lambda: _get(f"{url}/api/workers?refresh=1", auth=FLOWER_AUTH), timeout_s=60, message="Flower"
        )
        _publish_mix(stack)

        def delivery_tasks() -> list[dict[str, Any]]:
            response = _get(f"{url}/api/tasks?limit=1000", auth=FLOWER_AUTH)
            tasks = list(response.json().values()) if response else []
            done = [t for t in tasks if t.get("name") == "unsub.deliver" and t.get("state") == "SUCCESS"]
            delivered = sum(_result(t).get("delivered", 0) for t in done)
            return tasks if delivered >= REQUESTS else []

        tasks = wait_for(delivery_tasks, timeout_s=60, message="delivery tasks in Flower")
        workers = _get(f"{url}/api/workers", auth=FLOWER_AUTH)
        assert workers is not None
        assert {name.split("@")[0] for name in workers.json()} >= {"w1", "w2"}
        intake = [t for t in tasks if t.get("name") == "unsub.intake"]
        assert intake, "the intake task is visible by its readable name"
        shown = " ".join(str(t.get("args")) for t in intake)
        assert "ops1@example.com" not in shown
        assert "o***@example.com" in shown
        results = [
            _result(t) for t in tasks if t.get("name") == "unsub.deliver" and t.get("state") == "SUCCESS"
        ]
        assert {"connection", "delivered", "provider_calls"} <= set(results[0])
        assert httpx.get(f"{url}/api/workers", timeout=5).status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _result(task: dict[str, Any]) -> dict[str, Any]:
    import ast

    raw = task.get("result")
    try:
        value = ast.literal_eval(raw) if isinstance(raw, str) else raw
    except (ValueError, SyntaxError):
        return {}
    return value if isinstance(value, dict) else {}


def test_the_metrics_endpoint_reports_the_same_counts_as_stats_with_two_worker_processes(
    stack: LocalStack,
) -> None:
    proc, url = _serve(stack, "metrics")
    try:
        _publish_mix(stack)
        response = wait_for(lambda: _get(f"{url}/metrics"), timeout_s=30, message="the exporter")
        assert response is not None
        snapshot = stack.snapshot()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    found = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    checked = 0
    for conn in snapshot.connections:
        for outcome in ("delivered", "dead_lettered", "retried"):
            key = ("unsub_records_total", (("connection", conn.name), ("outcome", outcome)))
            assert found.get(key, 0.0) == conn.counters.get(outcome, 0), (conn.name, outcome)
            checked += conn.counters.get(outcome, 0)
        assert found[("unsub_pending_records", (("connection", conn.name),))] == conn.pending == 0
    assert checked >= REQUESTS * len(snapshot.connections) - REQUESTS  # every connection saw the mix

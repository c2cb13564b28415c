"""Metrics, health and Flower, tested for real."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from producer import names
from tests.support.intake import take_in
from tests.support.pipeline_harness import INSIDER, WHATCOUNTS, PipelineHarness
from tests.support.waiting import wait_for
from unsub_dev.localstack.processes import ManagedProcess
from unsub_dev.localstack.redis_server import free_port
from worker import keys
from worker.adapters.base import Outcome
from worker.cli import app as cli
from worker.health import HEARTBEAT_FILE, READY_FILE
from worker.metrics import COUNTERS, OUTCOMES, registry_for
from worker.pipeline import stats
from worker.pipeline.counters import Counter
from worker.pipeline.delivery import drain

runner = CliRunner()


def samples(harness: PipelineHarness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(registry_for(harness.redis, harness.rt.settings)).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_metrics_report_the_same_counts_as_stats(harness: PipelineHarness) -> None:
    harness.adapter("wc").script = lambda batch: [
        Outcome.dead("rejected_by_provider", "no") if r.email.startswith("bad") else Outcome.delivered()
        for r in batch
    ]
    payload = [{"email": f"u{i}@example.com", "connections": ["wc"]} for i in range(5)]
    take_in(harness.rt, [*payload, {"email": "bad@example.com"}], "t")
    drain(harness.rt, "wc")
    snapshot = stats.collect(harness.redis, harness.rt.settings)
    wc = next(c for c in snapshot.connections if c.name == "wc")

    found = samples(harness)

    assert (
        found[("unsub_records_total", (("connection", "wc"), ("outcome", "delivered")))]
        == wc.counters["delivered"]
        == 5
    )
    assert found[("unsub_records_total", (("connection", "wc"), ("outcome", "dead_lettered")))] == 1
    assert found[("unsub_dead_letters", (("reason", "rejected_by_provider"),))] == 1
    assert found[("unsub_provider_calls_total", (("connection", "wc"),))] == wc.counters["provider_calls"]
    assert found[("unsub_batch_size_count", (("connection", "wc"),))] == wc.counters["batches"]
    assert found[("unsub_pending_records", (("connection", "wc"),))] == 0
    assert found[("unsub_breaker_open", (("connection", "wc"),))] == 0
    assert found[("unsub_queue_length", (("queue", names.INTAKE_QUEUE),))] == 0


def test_every_counter_stats_can_show_is_a_metric_with_the_same_number(harness: PipelineHarness) -> None:
    shown = {str(counter): 10 + i for i, counter in enumerate(Counter)}
    shown["dead:rejected_by_provider"] = 3
    harness.redis.hset(keys.stats("wc"), mapping=shown)
    [wc] = [c for c in stats.collect(harness.redis, harness.rt.settings).connections if c.name == "wc"]

    found = samples(harness)

    by_counter = {
        **{o: ("unsub_records_total", (("connection", "wc"), ("outcome", o.value))) for o in OUTCOMES},
        **{c: (f"unsub_{name}_total", (("connection", "wc"),)) for c, (name, _) in COUNTERS.items()},
    }
    assert set(by_counter) == set(Counter)
    assert {str(c): found[key] for c, key in by_counter.items()} == {str(c): wc.counters[c] for c in Counter}
    dead = (
        "unsub_connection_dead_lettered_total",
        (("connection", "wc"), ("reason", "rejected_by_provider")),
    )
    assert found[dead] == wc.counters["dead:rejected_by_provider"] == 3


def _commands_of_one_scrape(harness: PipelineHarness, redis_url: str) -> list[str]:
    """The Redis commands one scrape sends, as the server saw them (MONITOR), in order."""
    from prometheus_client import generate_latest

    db = harness.redis.connection_pool.connection_kwargs.get("db", 0)
    watcher = redis.Redis.from_url(redis_url, decode_responses=True)
    seen: list[str] = []
    with watcher.monitor() as monitor:
        generate_latest(registry_for(harness.redis, harness.rt.settings))
        harness.redis.echo("scrape-done")
        for line in monitor.listen():
            if line["db"] != db:
                continue
            if line["command"] == "ECHO scrape-done":
                break
            seen.append(line["command"].split(" ", 1)[0].upper())
    watcher.close()
    return seen


def _add_unrelated_keys(client: redis.Redis, count: int) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.set(keys.request_status(f"unrelated-{i}"), "x")  # what status retention piles up
    pipe.execute()


def test_a_scrape_costs_the_same_redis_commands_with_ten_and_with_ten_thousand_unrelated_keys(
    harness: PipelineHarness, redis_url: str
) -> None:
    harness.adapter("wc").script = lambda batch: [Outcome.dead("rejected_by_provider", "no") for _ in batch]
    take_in(harness.rt, [{"email": "a@example.com"}, {"email": "broken"}], "t")
    drain(harness.rt, "wc")
    _add_unrelated_keys(harness.redis, 10)
    few = _commands_of_one_scrape(harness, redis_url)

    _add_unrelated_keys(harness.redis, 10_000)
    many = _commands_of_one_scrape(harness, redis_url)

    assert few == many
    assert not {"SCAN", "KEYS"} & set(many)
    snapshot = stats.collect(harness.redis, harness.rt.settings)
    found = samples(harness)
    assert snapshot.dead_letters_by_reason == {"invalid_email": 1, "rejected_by_provider": 1}
    assert {
        reason: found[("unsub_dead_letters", (("reason", reason),))]
        for reason in snapshot.dead_letters_by_reason
    } == snapshot.dead_letters_by_reason


def test_the_metrics_command_serves_prometheus_text(
    tmp_path: Path, redis_url: str, redis_client: object
) -> None:
    config = tmp_path / "u.yaml"
    config.write_text(
        yaml.safe_dump({"broker_url": redis_url, "connections": [WHATCOUNTS]}), encoding="utf-8"
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "metrics",
            "--config",
            str(config),
            "--port",
            str(port),
            "--address",
            "127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = wait_for(
            lambda: _get(f"http://127.0.0.1:{port}/metrics"), timeout_s=30, message="the exporter"
        )
        assert 'unsub_pending_records{connection="wc"} 0.0' in body
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("setting", "listens_on"),
    [({}, "127.0.0.1"), ({"metrics_address": "127.0.0.2"}, "127.0.0.2")],
    ids=["default", "metrics_address"],
)
def test_the_metrics_command_without_address_listens_where_the_settings_say(
    tmp_path: Path, redis_url: str, setting: dict[str, str], listens_on: str
) -> None:
    port = free_port()
    data = {"broker_url": redis_url, "metrics_port": port, **setting, "connections": [WHATCOUNTS]}
    config = tmp_path / "u.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "metrics", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        body = wait_for(
            lambda: _get(f"http://{listens_on}:{port}/metrics"), timeout_s=30, message="the exporter"
        )
        listening = {
            (c.laddr.ip, c.laddr.port)
            for c in psutil.Process(proc.pid).net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN
        }
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert 'unsub_pending_records{connection="wc"} 0.0' in (body or "")
    assert listening == {(listens_on, port)}


def _get(url: str, **kwargs: object) -> str | None:
    try:
        return httpx.get(url, timeout=2, **kwargs).text  # type: ignore[arg-type]
    except httpx.HTTPError:
        return None


def test_liveness_and_readiness_read_the_pods_files(tmp_path: Path) -> None:
    health = tmp_path / "health"

    assert runner.invoke(cli, ["health", "--liveness", "--health-dir", str(health)]).exit_code == 1
    health.mkdir()
    (health / HEARTBEAT_FILE).touch()
    assert runner.invoke(cli, ["health", "--liveness", "--health-dir", str(health)]).exit_code == 0
    old = time.time() - 120
    os.utime(health / HEARTBEAT_FILE, (old, old))
    assert runner.invoke(cli, ["health", "--liveness", "--health-dir", str(health)]).exit_code == 1
    assert runner.invoke(cli, ["health", "--readiness", "--health-dir", str(health)]).exit_code == 1
    (health / READY_FILE).write_text("w1\n", encoding="utf-8")
    assert runner.invoke(cli, ["health", "--readiness", "--health-dir", str(health)]).exit_code == 0


def test_health_is_unhealthy_without_a_scheduler_and_healthy_with_one(
    harness: PipelineHarness, tmp_path: Path
) -> None:
    config = tmp_path / "u.yaml"
    config.write_text(
        yaml.safe_dump({"broker_url": harness.rt.settings.broker_url, "connections": [WHATCOUNTS, INSIDER]}),
        encoding="utf-8",
    )

    sick = runner.invoke(cli, ["health", "--config", str(config)])
    harness.redis.set(keys.SCHEDULER_HEARTBEAT, f"{time.time():.3f}")
    well = runner.invoke(cli, ["health", "--config", str(config)])

    assert sick.exit_code == 1
    assert "scheduler is not ticking" in sick.output
    assert well.exit_code == 0, well.output


def test_flower_refuses_to_start_without_credentials(tmp_path: Path) -> None:
    result = runner.invoke(cli, ["flower"])

    assert result.exit_code == 2
    assert "--insecure-local" in result.output
    insecure_elsewhere = runner.invoke(cli, ["flower", "--insecure-local", "--address", "0.0.0.0"])  # noqa: S104
    assert insecure_elsewhere.exit_code == 2


@pytest.fixture
def flower_stack(
    tmp_path: Path, write_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess]
) -> Iterator[tuple[str, Path]]:
    config = write_config(flower_user="ops", flower_password="flower-secret-pw")
    start_worker(config, queues="intake")
    port = free_port()
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "flower", "--config", str(config), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get(f"{url}/healthcheck"), timeout_s=60, message="Flower to answer")
        yield url, config
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.mark.integration
def test_flower_shows_workers_and_tasks_and_refuses_anonymous_requests(
    flower_stack: tuple[str, Path],
) -> None:
    url, config = flower_stack
    from worker.app import app
    from worker.settings import load_settings, use_settings

    use_settings(load_settings(config))
    auth = ("ops", "flower-secret-pw")
    wait_for(
        lambda: (_json(f"{url}/api/workers?refresh=1", auth) or {}) != {},
        timeout_s=60,
        message="workers in Flower",
    )
    results = [app.send_task("unsub.ping", queue=names.INTAKE_QUEUE) for _ in range(3)]
    assert [r.get(timeout=30) for r in results] == ["pong"] * 3

    tasks = wait_for(
        lambda: (
            [t for t in (_json(f"{url}/api/tasks", auth) or {}).values() if t.get("state") == "SUCCESS"][2:]
            and _json(f"{url}/api/tasks", auth)
        ),
        timeout_s=60,
        message="tasks in Flower",
    )
    assert {t["name"] for t in tasks.values()} == {"unsub.ping"}
    assert httpx.get(f"{url}/api/workers", timeout=5).status_code == 401
    assert httpx.get(f"{url}/api/tasks", auth=("ops", "wrong"), timeout=5).status_code == 401


def _json(url: str, auth: tuple[str, str]) -> dict[str, dict[str, object]] | None:
    try:
        response = httpx.get(url, auth=auth, timeout=5)
    except httpx.HTTPError:
        return None
    return response.json() if response.status_code == 200 else None  # type: ignore[no-any-return]


def test_a_worker_whose_intake_loop_stopped_turning_stops_renewing_its_liveness_heartbeat(
    tmp_path: Path, harness: PipelineHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import health, intake_step
    from worker.pipeline.intake_loop import IntakeLoop

    loop = IntakeLoop(harness.rt, consumer="test:intake", client=harness.redis)
    monkeypatch.setattr(intake_step, "_loops", [loop])
    heartbeat = tmp_path / "heartbeat"

    health.beat(heartbeat)
    assert heartbeat.exists()
    heartbeat.unlink()
    loop.last_turn_at -= intake_step.STUCK_AFTER_S + 1
    health.beat(heartbeat)

    assert not heartbeat.exists()
    assert intake_step.intake_stuck()

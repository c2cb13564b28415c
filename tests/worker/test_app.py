"""The Celery app and a real worker process against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import yaml

from producer import names
from producer.client import Producer
from tests.support.waiting import wait_for
from unsub_dev.localstack.processes import ManagedProcess
from worker import providers
from worker.pipeline import counters, status
from worker.settings import load_settings


def test_importing_the_app_reads_no_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    import worker.app

    monkeypatch.setenv("UNSUB_FLUSH_INTERVAL_S", "not a number")  # would fail if read at import
    importlib.reload(worker.app)


def test_the_celery_configuration_is_reliable_by_default(tmp_path: Path) -> None:
    from worker.app import celery_config

    conf = celery_config(load_settings(broker_url="redis://example:6379/2"))

    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_send_task_events"] is True
    assert conf["accept_content"] == ["json"]
    assert conf["worker_consumer"] == "worker.side_queues:SideQueueConsumer"
    assert {q.name for q in conf["task_queues"]} == set(providers.declared_queues())
    assert conf["broker_transport_options"]["unacked_mutex_expire"] <= 10
    assert conf["result_backend"] == "redis://example:6379/2"


@pytest.mark.integration
def test_a_real_worker_process_consumes_and_stores_results(
    tmp_path: Path, write_config: Callable[..., Path], start_worker: Callable[..., ManagedProcess]
) -> None:
    config = write_config()
    start_worker(config, queues="intake")
    from worker.app import app
    from worker.settings import use_settings

    use_settings(load_settings(config))
    through_intake = app.send_task("unsub.ping", queue=names.INTAKE_QUEUE)
    through_celery = app.send_task("unsub.ping", queue=names.CONTROL_QUEUE)

    assert through_intake.get(timeout=30) == "pong"  # answered by the intake loop
    assert through_celery.get(timeout=30) == "pong"  # answered by a Celery task
    assert (tmp_path / "health-w1" / "heartbeat").exists()


@pytest.mark.integration
def test_an_intake_message_a_worker_cannot_take_in_is_taken_in_by_the_next_one(
    tmp_path: Path,
    redis_url: str,
    redis_client: redis.Redis,
    start_worker: Callable[..., ManagedProcess],
) -> None:
    def config(name: str, **settings: object) -> Path:
        data = {
            "broker_url": redis_url,
            "health_dir": str(tmp_path / "health"),
            "visibility_timeout_s": 2,
            "unacked_restore_interval_s": 1,
            "connections": [],
            **settings,
        }
        path = tmp_path / name
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    broken = start_worker(
        config("broken.yaml", redis_url="redis://127.0.0.1:1/0"), name="broken", queues="intake"
    )
    with Producer(broker_url=redis_url) as producer:
        producer.publish({"email": "kept@example.com", "request_id": "kept-1"})
    wait_for(
        lambda: "intake waits for its Redis" in broken.log_tail(200), timeout_s=60, message="intake to wait"
    )
    broken.stop()

    start_worker(config("good.yaml"), name="good", queues="intake")

    wait_for(
        lambda: status.read(redis_client, "kept-1") is not None,
        timeout_s=60,
        message="the failed intake message to come back and be taken in",
    )
    assert counters.read_intake(redis_client)["requests"] == 1


@pytest.mark.parametrize(
    ("celery_code", "intake_died", "expected"), [(0, False, 0), (1, False, 1), (0, True, 1)]
)
def test_unsub_worker_exits_with_celerys_code_and_non_zero_when_its_intake_loop_died(
    celery_code: int,
    intake_died: bool,
    expected: int,
    write_config: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from worker import intake_step
    from worker.app import app
    from worker.cli import app as cli

    monkeypatch.setattr(app, "start", lambda argv=None: celery_code)  # Celery returns its exit code
    monkeypatch.setattr(intake_step, "intake_failed", lambda: intake_died)

    result = CliRunner().invoke(cli, ["worker", "--config", str(write_config())])

    assert result.exit_code == expected


def test_unsub_worker_exits_with_the_code_its_celery_worker_stopped_with_when_celery_start_drops_it(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from celery import signals
    from typer.testing import CliRunner

    import worker.app as app_module
    from worker.cli import app as cli

    def start(argv: list[str] | None = None) -> None:  # Celery 5 with click >= 7: the code is dropped
        signals.worker_shutdown.send(sender=SimpleNamespace(exitcode=1))

    monkeypatch.setattr(app_module, "_stopped_with", {})
    monkeypatch.setattr(app_module.app, "start", start)

    result = CliRunner().invoke(cli, ["worker", "--config", str(write_config())])

    assert result.exit_code == 1

"""The Celery app and a real worker process against a real Redis."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from producer import names
from tests.support.processes import WorkerProcess
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
    assert {q.name for q in conf["task_queues"]} == set(names.ALL_QUEUES)
    assert conf["result_backend"] == "redis://example:6379/2"


@pytest.mark.integration
def test_a_real_worker_process_consumes_and_stores_results(
    write_config: Callable[..., Path], start_worker: Callable[..., WorkerProcess]
) -> None:
    config = write_config()
    worker = start_worker(config, queues="intake")
    from worker.app import app
    from worker.settings import use_settings

    use_settings(load_settings(config))
    result = app.send_task("unsub.ping", queue=names.INTAKE_QUEUE)

    assert result.get(timeout=30) == "pong"
    assert (worker.health_dir / "heartbeat").exists()

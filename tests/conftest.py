"""Fixtures shared by every test.

- ``redis_url`` / ``redis_client``: a real Redis on a dedicated DB number, flushed before and after
  each test. Missing Redis fails the run under ``CI=true`` and skips with a reason otherwise.
- ``fake_redis``: fakeredis, for pure unit tests of single pieces only.
- ``write_config``: writes a settings file for in-process code and worker subprocesses alike.
- ``start_worker``: real `unsub worker` processes against that Redis, stopped after the test.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import yaml

from tests.support.sandbox_fixtures import sandbox, sandbox_factory, sandbox_server  # noqa: F401
from unsub_dev.localstack.processes import ManagedProcess, worker_process

#: DB number the tests own; everything in it is deleted before and after each test.
TEST_REDIS_URL = os.environ.get("UNSUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never see the machine's UNSUB_* settings."""
    for name in list(os.environ):
        if name.startswith("UNSUB_") and name != "UNSUB_TEST_REDIS_URL":
            monkeypatch.delenv(name)
    from worker.settings import use_settings

    use_settings(None)


@pytest.fixture(scope="session")
def redis_url() -> str:
    client = redis.Redis.from_url(TEST_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if IN_CI:
            pytest.fail(f"CI=true but no Redis answers at {TEST_REDIS_URL}: {exc}")
        pytest.skip(f"no Redis at {TEST_REDIS_URL} ({exc}); start one or set UNSUB_TEST_REDIS_URL")
    finally:
        client.close()
    return TEST_REDIS_URL


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def fake_redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(decode_responses=True)


@pytest.fixture
def write_config(tmp_path: Path, redis_url: str) -> Callable[..., Path]:
    """Write a settings file; ``broker_url`` defaults to the test Redis."""

    def write(connections: list[dict[str, Any]] | None = None, **settings: Any) -> Path:
        data: dict[str, Any] = {
            "broker_url": redis_url,
            "health_dir": str(tmp_path / "health"),
            "log_format": "json",
            "visibility_timeout_s": 20,
            "unacked_restore_interval_s": 1,
            "reclaim_idle_s": 5,
            "shutdown_timeout_s": 10,
            **settings,
            "connections": connections or [],
        }
        path = tmp_path / "unsub.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        return path

    return write


@pytest.fixture
def start_worker(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Callable[..., ManagedProcess]]:
    """Start real worker processes (one pool process unless told); each is stopped when the test ends.

    A worker named ``w1`` keeps its heartbeat and ready files in ``tmp_path / "health-w1"``.
    """
    started: list[ManagedProcess] = []

    def start(config: Path, *, name: str = "w1", concurrency: int = 1, **options: Any) -> ManagedProcess:
        proc = worker_process(config, tmp_path, name=name, concurrency=concurrency, **options)
        started.append(proc)
        return proc.start()

    yield start
    for proc in started:
        proc.stop()

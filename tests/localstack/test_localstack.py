"""The local stack's pieces: embedded Redis, config re-pointing, managed child processes."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import redis

from unsub_dev.errors import ProcessStartError
from unsub_dev.localstack.config import EXAMPLE_SANDBOX_URL, local_config, write_config
from unsub_dev.localstack.processes import ManagedProcess
from unsub_dev.localstack.redis_server import EmbeddedRedis, redis_answers
from worker.settings import load_settings


def test_an_embedded_redis_starts_on_a_free_port_answers_stops_and_leaves_nothing_behind() -> None:
    with EmbeddedRedis() as server:
        assert redis_answers(server.url)
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
        url = server.url
        workdir = server.workdir
    assert not redis_answers(url)
    assert not workdir.exists()  # no temp directory left behind


def test_nothing_listening_is_not_a_redis() -> None:
    assert not redis_answers("redis://127.0.0.1:1/0")


def test_the_local_config_points_every_connection_at_the_given_sandbox_and_redis(tmp_path: Path) -> None:
    data = local_config("http://127.0.0.1:9999", "redis://127.0.0.1:7000/3")
    text = write_config(tmp_path / "c.yaml", data).read_text()
    assert EXAMPLE_SANDBOX_URL not in text
    settings = load_settings(tmp_path / "c.yaml")
    assert settings.broker_url == "redis://127.0.0.1:7000/3"
    assert {c.type for c in settings.connections} == {
        "cc_partner",
        "cc_contacts",
        "whatcounts",
        "insider",
        "easytools",
    }
    for conn in settings.connections:
        assert str(conn.base_url).startswith("http://127.0.0.1:9999/")
        assert conn.retry.cap_s <= 2.0


def test_a_child_that_exits_before_it_is_ready_is_reported_with_its_log(tmp_path: Path) -> None:
    child = ManagedProcess(
        name="broken", args=["no-such-command"], log_path=tmp_path / "broken.log", ready=lambda: False
    )
    with pytest.raises(ProcessStartError, match="broken exited early"):
        child.start(ready_timeout_s=20)
    assert "no-such-command" in child.log_tail()


def test_a_killed_child_is_no_longer_running(tmp_path: Path) -> None:
    child = ManagedProcess(name="help", args=["scheduler", "--help"], log_path=tmp_path / "h.log")
    child.start()
    child.kill(signal.SIGKILL)
    assert not child.running
    assert child.stop() is not None

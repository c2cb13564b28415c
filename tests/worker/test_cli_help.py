"""The command line as a new user meets it: --version, --help in words, completion, health's checks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import redis
import typer.main
from typer.testing import CliRunner

from unsub_dev.localstack.processes import ManagedProcess
from worker import keys
from worker.cli import app

runner = CliRunner()
#: typer's own type labels: <bool>, <str>, <int>, <list[str]>, <path>...
TYPE_LABEL = re.compile(r"<(?:bool|str|int|float|path|datetime|uuid|list\[[^\]]*\]|[a-z]+ range)>")
UNSUB = Path(sys.executable).parent / "unsub"


def command_paths() -> Iterator[list[str]]:
    def walk(command: Any, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


def test_version_prints_the_installed_version() -> None:
    result = runner.invoke(app, ["--version"])

    assert result.exit_code == 0
    assert result.output.strip() == f"unsub {version('unsub-relay')}"


@pytest.mark.parametrize("path", list(command_paths()), ids=lambda p: " ".join(p) or "unsub")
def test_help_names_every_value_in_words_and_flags_show_none(path: list[str]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert TYPE_LABEL.findall(result.output) == [], result.output


def test_options_show_the_word_for_what_they_take() -> None:
    out = " ".join(runner.invoke(app, ["dlq", "replay", "--help"], env={"COLUMNS": "200"}).output.split())

    assert "--connection NAME" in out
    assert "--since WHEN" in out
    assert "--config -c FILE" in out
    assert "[ID]..." in out
    assert "--all Every dead letter" in out


def test_completion_is_offered_and_completes_commands() -> None:
    env = {**os.environ, "COMP_WORDS": "unsub dl", "COMP_CWORD": "1", "_UNSUB_COMPLETE": "complete_bash"}

    completed = subprocess.run([UNSUB], env=env, capture_output=True, text=True, timeout=60, check=False)

    assert "--install-completion" in runner.invoke(app, ["--help"]).output
    assert completed.stdout.split() == ["dlq"]


@pytest.fixture
def config(write_config: Callable[..., Path]) -> Path:
    connection = {
        "name": "wc",
        "type": "whatcounts",
        "base_url": "http://127.0.0.1:1/whatcounts",
        "realm": "r",
        "password": "pw-123456",
    }
    return write_config([connection])


def test_health_prints_each_thing_it_checked(config: Path, redis_client: redis.Redis) -> None:
    redis_client.set(keys.SCHEDULER_HEARTBEAT, f"{time.time():.3f}")

    result = runner.invoke(app, ["health", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "ok: Redis redis://" in result.output
    assert "ok: the scheduler ticked" in result.output
    assert "ok: breakers closed on all 1 connection(s)" in result.output
    assert "healthy: 3 checks passed" in result.output
    assert "--deep also" in result.output


@pytest.mark.integration
def test_health_deep_also_has_a_worker_answer_a_ping(
    config: Path, redis_client: redis.Redis, start_worker: Callable[..., ManagedProcess]
) -> None:
    start_worker(config, queues="intake")
    redis_client.set(keys.SCHEDULER_HEARTBEAT, f"{time.time():.3f}")

    result = runner.invoke(app, ["health", "--deep", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "ok: a worker on unsub.intake answered a ping in" in result.output
    assert "healthy: 4 checks passed" in result.output

"""Fixtures for end-to-end tests: the whole system (workers, scheduler, Redis, sandbox) in one place.

- ``stack``: a :class:`LocalStack` on the test Redis (flushed before and after) pointed at the
  session sandbox (reset before and after). Nothing is started: the test starts the workers and the
  scheduler it needs; everything started is stopped when the test ends, and the processes' logs are
  printed when a test fails.
- ``stack_factory(settings_overrides=..., config_hook=...)``: the same with a different config; call
  it once per test (each call gets its own work directory).
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import STACKS, StackFactory, attach_logs
from unsub_dev.localstack.stack import LocalStack

#: Settings every end-to-end stack uses unless a test overrides them: short enough for a test run.
E2E_SETTINGS: dict[str, Any] = {
    "visibility_timeout_s": 30,
    "unacked_restore_interval_s": 1,
    "shutdown_timeout_s": 10,
}


@pytest.fixture
def stack_factory(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    redis_client: redis.Redis,
    redis_url: str,
    sandbox: SandboxClient,
) -> Iterator[StackFactory]:
    factory = StackFactory(tmp_path, redis_url, sandbox.url, defaults=E2E_SETTINGS)
    request.node.stash[STACKS] = factory.stacks
    yield factory
    factory.stop_all()


@pytest.fixture
def stack(stack_factory: StackFactory) -> LocalStack:
    return stack_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome: Any = yield
    attach_logs(item, outcome.get_result())

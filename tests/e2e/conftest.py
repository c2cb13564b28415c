"""Fixtures for end-to-end tests: the whole system (workers, scheduler, Redis, sandbox) in one place.

- ``stack``: a :class:`LocalStack` on the test Redis (flushed before and after) pointed at the
  session sandbox (reset before and after). Nothing is started: the test starts the workers and the
  scheduler it needs; everything started is stopped when the test ends, and the processes' logs are
  printed when a test fails.
- ``stack_factory(settings_overrides=..., config_hook=...)``: the same with a different config; call
  it once per test (each call gets its own work directory).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.support.sandbox_fixtures import SandboxClient
from worker.localstack.stack import LocalStack

STACKS = pytest.StashKey[list[LocalStack]]()

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
) -> Iterator[Callable[..., LocalStack]]:
    stacks: list[LocalStack] = []
    request.node.stash[STACKS] = stacks

    def make(
        *,
        settings_overrides: dict[str, Any] | None = None,
        config_hook: Callable[[dict[str, Any]], None] | None = None,
        fast: bool = True,
    ) -> LocalStack:
        stack = LocalStack(
            tmp_path / f"stack{len(stacks)}",
            redis_url=redis_url,
            sandbox_url=sandbox.url,
            fast=fast,
            settings_overrides={**E2E_SETTINGS, **(settings_overrides or {})},
            config_hook=config_hook,
        )
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture
def stack(stack_factory: Callable[..., LocalStack]) -> LocalStack:
    return stack_factory()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """On failure, attach the processes' log tails to the report (one place to look)."""
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for stack in item.stash.get(STACKS, []):
        report.sections.append((f"logs of {stack.workdir.name}", stack.logs()[-20000:]))

"""Making whole local systems in tests: a factory of LocalStacks and config hooks.

The end-to-end tests and the reliability suite both build :class:`LocalStack` instances on the test
Redis against the session sandbox; this module is the one place that knows how.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from unsub_dev.localstack.stack import LocalStack

ConfigHook = Callable[[dict[str, Any]], None]

#: Where a test's stacks are kept, so a failure report can show their logs.
STACKS = pytest.StashKey[list[LocalStack]]()

#: Connection name (worker/examples/sandbox.yaml) -> sandbox provider name.
PROVIDER_OF = {
    "cc-partner": "cc_partner",
    "cc-contacts": "cc_contacts",
    "whatcounts": "whatcounts",
    "whatcounts-ck": "whatcounts",
    "insider": "insider",
    "easytools": "easytools",
}


@dataclass
class StackFactory:
    """``factory(settings_overrides=..., config_hook=...)`` makes a stack in its own directory."""

    workdir: Path
    redis_url: str
    sandbox_url: str
    defaults: dict[str, Any] = field(default_factory=dict)
    on_make: Callable[[LocalStack], None] | None = None
    stacks: list[LocalStack] = field(default_factory=list)

    def __call__(
        self,
        *,
        settings_overrides: dict[str, Any] | None = None,
        config_hook: ConfigHook | None = None,
        fast: bool = True,
        redis_url: str | None = None,
        sandbox_url: str | None = None,
    ) -> LocalStack:
        stack = LocalStack(
            self.workdir / f"stack{len(self.stacks)}",
            redis_url=redis_url or self.redis_url,
            sandbox_url=sandbox_url or self.sandbox_url,
            fast=fast,
            settings_overrides={**self.defaults, **(settings_overrides or {})},
            config_hook=config_hook,
        )
        self.stacks.append(stack)
        if self.on_make is not None:
            self.on_make(stack)
        return stack

    def stop_all(self) -> None:
        for stack in self.stacks:
            stack.stop()


def attach_logs(item: pytest.Item, report: pytest.TestReport) -> None:
    """On a failed test call, add every stack's process logs to the report (one place to look)."""
    if report.when != "call" or not report.failed:
        return
    for stack in item.stash.get(STACKS, []):
        report.sections.append((f"logs of {stack.workdir.name}", stack.logs()[-20000:]))


def only_connections(*names: str) -> ConfigHook:
    """A config hook that keeps only the named connections."""

    def hook(data: dict[str, Any]) -> None:
        data["connections"] = [c for c in data["connections"] if c["name"] in names]

    return hook


def set_connection(name: str, **values: Any) -> ConfigHook:
    """A config hook that sets fields of one connection (dict values are merged: ``retry={...}``)."""

    def hook(data: dict[str, Any]) -> None:
        for conn in data["connections"]:
            if conn["name"] != name:
                continue
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(conn.get(key), dict):
                    conn[key] = {**conn[key], **value}
                else:
                    conn[key] = value

    return hook


def chain(*hooks: ConfigHook) -> ConfigHook:
    def hook(data: dict[str, Any]) -> None:
        for h in hooks:
            h(data)

    return hook

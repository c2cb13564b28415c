"""Configuration for a local stack: the sandbox example config pointed at a given sandbox and Redis.

``worker/examples/sandbox.yaml`` is the one description of the sandbox's connections; a local run
(demo, end-to-end tests, benchmarks) re-points its URLs and, for short runs, compresses time:
retries, breaker cool-downs and flushes measured in fractions of a second instead of minutes.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Final

import yaml

#: Where the example config expects the sandbox.
EXAMPLE_SANDBOX_URL: Final = "http://127.0.0.1:8025"

#: Retry and breaker timings for runs measured in seconds, not days.
FAST_RETRY: Final = {"base_s": 0.25, "cap_s": 2.0, "max_attempts": 40, "max_age_s": 600.0}
FAST_BREAKER: Final = {"failure_threshold": 5, "cooldown_s": 1.0, "max_cooldown_s": 3.0}
FAST_SETTINGS: Final = {"flush_interval_s": 0.25, "reclaim_idle_s": 5.0, "drain_budget_s": 5.0}


def example_config() -> dict[str, Any]:
    """The packaged ``worker/examples/sandbox.yaml`` as data."""
    text = resources.files("worker").joinpath("examples/sandbox.yaml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _repoint(value: Any, sandbox_url: str) -> Any:
    if isinstance(value, str):
        return value.replace(EXAMPLE_SANDBOX_URL, sandbox_url.rstrip("/"))
    if isinstance(value, dict):
        return {k: _repoint(v, sandbox_url) for k, v in value.items()}
    if isinstance(value, list):
        return [_repoint(v, sandbox_url) for v in value]
    return value


def local_config(sandbox_url: str, redis_url: str, *, fast: bool = True, **settings: Any) -> dict[str, Any]:
    """The example config against ``sandbox_url`` and ``redis_url``; ``settings`` override top-level keys."""
    data: dict[str, Any] = _repoint(example_config(), sandbox_url)
    data["broker_url"] = redis_url
    if fast:
        data.update(FAST_SETTINGS)
        for conn in data["connections"]:
            conn.setdefault("retry", dict(FAST_RETRY))
            conn.setdefault("breaker", dict(FAST_BREAKER))
    data.update(settings)
    return data


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path

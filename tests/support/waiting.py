"""Wait on conditions, never on fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_INTERVAL_S = 0.05


def wait_for(
    condition: Callable[[], T],
    *,
    timeout_s: float = 30.0,
    interval_s: float = POLL_INTERVAL_S,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``message`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {text}")
        time.sleep(interval_s)

"""Liveness and readiness without ``celery inspect ping``.

The worker's event loop touches ``<health_dir>/heartbeat`` every :data:`HEARTBEAT_INTERVAL_S`
(a Celery bootstep timer, so a hung loop stops touching it), writes ``<health_dir>/ready`` when
the worker is ready and removes it when the worker shuts down. Probes look at the files:

    liveness:  test $(( $(date +%s) - $(stat -c %Y /tmp/unsub-health/heartbeat) )) -lt 60
    readiness: test -f /tmp/unsub-health/ready

``unsub health`` does the same for scripts, and also checks Redis.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Final

from celery import bootsteps

from worker.intake_step import intake_stuck
from worker.logs import get_logger

log = get_logger(__name__)

HEARTBEAT_FILE: Final = "heartbeat"
READY_FILE: Final = "ready"
HEARTBEAT_INTERVAL_S: Final = 10.0
#: A heartbeat older than this means the worker is not alive.
LIVENESS_MAX_AGE_S: Final = 60.0


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    os.utime(path)


def write_ready(health_dir: Path, hostname: str) -> None:
    health_dir.mkdir(parents=True, exist_ok=True)
    (health_dir / READY_FILE).write_text(f"{hostname}\n{os.getpid()}\n", encoding="utf-8")
    touch(health_dir / HEARTBEAT_FILE)


def clear_ready(health_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (health_dir / READY_FILE).unlink()


def heartbeat_age_s(health_dir: Path) -> float | None:
    """Seconds since the last heartbeat, or None if there is none."""
    try:
        return time.time() - (health_dir / HEARTBEAT_FILE).stat().st_mtime
    except FileNotFoundError:
        return None


def is_ready(health_dir: Path) -> bool:
    return (health_dir / READY_FILE).exists()


def beat(path: Path) -> None:
    """Touch the heartbeat unless this worker's intake loop is stuck (then liveness fails and the
    pod is restarted, instead of a worker that looks alive taking nothing in)."""
    if intake_stuck():
        log.error("the intake loop has not turned for a minute: not renewing the liveness heartbeat")
        return
    touch(path)


class HeartbeatStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Consumer bootstep: touches the heartbeat file from the worker's own event loop."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._tref: Any = None

    def start(self, parent: Any) -> None:
        from worker.settings import get_settings

        path = get_settings().health_dir / HEARTBEAT_FILE
        touch(path)
        self._tref = parent.timer.call_repeatedly(HEARTBEAT_INTERVAL_S, beat, (path,), priority=10)

    def stop(self, parent: Any) -> None:
        if self._tref is not None:
            self._tref.cancel()
            self._tref = None

"""The project's own processes (`unsub worker`, `unsub scheduler`) started as children.

Each child runs in its own process group, so ``kill()`` reaches a Celery worker's pool children
too, and logs to a file the caller can show when something goes wrong.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from unsub_dev.errors import ProcessStartError

READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 60.0
POLL_INTERVAL_S: Final = 0.1
LOG_TAIL_LINES: Final = 40


@dataclass
class ManagedProcess:
    """One `python -m worker ...` child with its environment and log file."""

    name: str
    args: Sequence[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *, ready_timeout_s: float = READY_TIMEOUT_S) -> ManagedProcess:
        if self.running:
            raise ProcessStartError(f"{self.name} is already running")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", *self.args],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready(ready_timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.ready is not None and not self.ready():
            if not self.running:
                raise ProcessStartError(f"{self.name} exited early:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                waited = f"{timeout_s:.0f}s"
                raise ProcessStartError(f"{self.name} was not ready after {waited}:\n{self.log_tail()}")
            time.sleep(POLL_INTERVAL_S)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the whole process group (SIGKILL: no goodbye, like an OOM kill)."""
        if self.proc is not None and self.running:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            if sig == signal.SIGKILL:
                self.proc.wait()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait (a warm shutdown); SIGKILL the group if it does not exit in time."""
        if self.proc is None:
            return None
        if self.running:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):  # pool children left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


def worker_process(
    config: Path,
    workdir: Path,
    *,
    name: str = "w1",
    queues: str = "all",
    concurrency: int = 2,
    pool: str = "prefork",
    env: dict[str, str] | None = None,
) -> ManagedProcess:
    """An `unsub worker` child, ready once it wrote its ready file."""
    health_dir = workdir / f"health-{name}"
    health_dir.mkdir(parents=True, exist_ok=True)
    ready_file = health_dir / "ready"
    ready_file.unlink(missing_ok=True)
    args = ["worker", "--queues", queues, "--concurrency", str(concurrency), "--pool", pool]
    return ManagedProcess(
        name=f"worker {name}",
        args=[*args, "--name", f"{name}@%h"],
        log_path=workdir / f"{name}.log",
        env={"UNSUB_CONFIG": str(config), "UNSUB_HEALTH_DIR": str(health_dir), **(env or {})},
        ready=ready_file.exists,
    )


def scheduler_process(
    config: Path, workdir: Path, *, ready: Callable[[], bool] | None = None, env: dict[str, str] | None = None
) -> ManagedProcess:
    """An `unsub scheduler` child; ``ready`` may check its heartbeat in Redis."""
    return ManagedProcess(
        name="scheduler",
        args=["scheduler"],
        log_path=workdir / "scheduler.log",
        env={"UNSUB_CONFIG": str(config), **(env or {})},
        ready=ready,
    )

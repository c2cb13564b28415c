"""The intake loop inside `unsub worker`: a worker bootstep runs it on a thread of the main process.

Intake never queues behind delivery: it does not wait for a pool process, and a pool process busy
with a slow provider never delays it. The loop (:mod:`worker.pipeline.intake_loop`) is the only
consumer of the intake queue; Celery's own consumer reads only the delivery and control queues.

:class:`CelerySink` keeps Flower's view of the work: for every Celery intake message it sends the
task events a Celery worker would (``task-received`` with the masked ``argsrepr``, then
``task-succeeded`` with the message's counts, or ``task-failed`` with the dead-letter reason), in one
batched event message per intake transaction; and it answers ``unsub.ping`` (``unsub health
--deep``) in the result backend, which proves the whole intake path works.

If the loop's thread dies (a failed turn is caught and tried again, unless Redis refuses the loop's own
keys for good: :class:`~worker.errors.IntakeStoppedError`), the worker logs one critical line, stops
and `unsub worker` exits 1, so a supervisor restarts it (and shows it) rather than leave a worker that
takes nothing in.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from typing import Any, Final

import redis
from celery import Celery, bootsteps

from worker.logs import get_logger, redact_text
from worker.pipeline import liveness
from worker.pipeline.envelope import Message
from worker.pipeline.intake_loop import IntakeLoop
from worker.pipeline.runtime import Runtime
from worker.redis_client import redis_for
from worker.settings import get_settings

log = get_logger(__name__)

#: Celery setting (``app.conf``) that tells a worker whether to run the intake loop.
RUN_INTAKE: Final = "unsub_run_intake"
#: Events buffered before a batch is sent (they are also sent after each intake transaction).
EVENT_BUFFER: Final = 500
#: Longest wait for the loop to finish its turn when the worker stops.
STOP_JOIN_S: Final = 30.0
#: Pause between attempts to reach Redis at start, doubling up to the maximum.
SETUP_PAUSE_S: Final = 0.5
MAX_SETUP_PAUSE_S: Final = 5.0

_failed = threading.Event()


#: An intake loop whose last turn is older than this is stuck: the worker stops touching its liveness
#: heartbeat, so Kubernetes restarts it (a turn is at most a few seconds, an idle one 0.1 s).
STUCK_AFTER_S: Final = 60.0
_loops: list[IntakeLoop] = []


def intake_stuck(now: float | None = None) -> bool:
    """True when this process runs an intake loop that has not turned for :data:`STUCK_AFTER_S`."""
    now = time.monotonic() if now is None else now
    return any(now - loop.last_turn_at > STUCK_AFTER_S for loop in _loops)


def intake_failed() -> bool:
    """True once this process's intake loop died: the worker must exit non-zero."""
    return _failed.is_set()


def task_sender(app: Celery) -> Any:
    """``Runtime.send_task`` for processes of this app."""

    def send(name: str, args: list[object], queue: str, *, countdown: float | None = None) -> None:
        app.send_task(name, args=args, queue=queue, countdown=countdown)

    return send


class CelerySink:
    """Task events for Flower and ping answers, from the intake loop's thread."""

    def __init__(self, app: Celery, hostname: str, *, events: bool) -> None:
        self._app = app
        self._hostname = hostname
        self._events = events
        self._dispatcher: Any = None
        self._connection: Any = None

    def taken(self, message: Message, counts: dict[str, int]) -> None:
        self._received(message)
        self._send("task-succeeded", uuid=message.task_id, result=repr(counts), runtime=0.0)

    def refused(self, message: Message) -> None:
        if message.kind != "celery" or message.task_id is None or message.unusable is None:
            return
        self._received(message)
        problem = message.unusable.problems[0] if message.unusable.problems else ""
        text = redact_text(f"{message.unusable.reason}: {problem}")
        self._send("task-failed", uuid=message.task_id, exception=text, traceback="")

    def ping(self, message: Message) -> None:
        if message.task_id:
            self._app.backend.store_result(message.task_id, "pong", "SUCCESS")
            self._received(message)
            self._send("task-succeeded", uuid=message.task_id, result="'pong'", runtime=0.0)

    def flush(self) -> None:
        if self._dispatcher is not None:
            try:
                self._dispatcher.flush()
            except Exception as exc:  # Flower misses a few events; nothing else depends on them
                log.warning("could not send task events", error=type(exc).__name__)
                self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self._connection is not None:
                self._connection.release()
        self._dispatcher = self._connection = None

    def _received(self, message: Message) -> None:
        self._send(
            "task-received",
            uuid=message.task_id,
            name=message.task_name,
            args=message.argsrepr,
            kwargs="{}",
            root_id=message.task_id,
            parent_id=None,
            retries=0,
            eta=None,
            expires=None,
        )

    def _send(self, event_type: str, **fields: Any) -> None:
        if not self._events or not fields.get("uuid"):
            return
        dispatcher = self._dispatcher or self._open()
        dispatcher.send(event_type, **fields)

    def _open(self) -> Any:
        self._connection = self._app.connection_for_write()
        self._dispatcher = self._app.events.Dispatcher(
            self._connection,
            hostname=self._hostname,
            groups=["task"],
            buffer_group=["task"],
            buffer_limit=EVENT_BUFFER,
        )
        return self._dispatcher


class IntakeStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Worker bootstep: the intake loop on its own thread, started once the pool is up."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.enabled = bool(parent.app.conf.get(RUN_INTAKE, True))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runtime: Runtime | None = None
        self._keeper: liveness.Keeper | None = None
        self._sink: CelerySink | None = None

    def start(self, parent: Any) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(parent.app, parent.hostname), name="unsub-intake", daemon=True
        )
        self._thread.start()

    def stop(self, parent: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_JOIN_S)
        with contextlib.suppress(Exception):
            if self._sink is not None:
                self._sink.close()
            if self._runtime is not None:
                self._runtime.close()
            if self._keeper is not None:
                self._keeper.stop()

    def _run(self, app: Celery, hostname: str) -> None:
        try:
            loop = self._set_up(app, hostname)
            if loop is not None:
                _loops.append(loop)
                loop.run(self._stop)
        except BaseException:  # a turn's failure is caught inside unless retrying cannot help
            log.critical("the intake loop died; stopping the worker so that it is restarted", exc_info=True)
            _failed.set()
            time.sleep(0.1)
            os.kill(os.getpid(), signal.SIGTERM)

    def _set_up(self, app: Celery, hostname: str) -> IntakeLoop | None:
        """Build the loop once Redis answers (a worker may start before its Redis does)."""
        settings = get_settings()
        client = redis_for(settings.state_redis_url)
        token = liveness.process_token()
        pause = SETUP_PAUSE_S
        while not self._stop.is_set():
            try:
                consumer = liveness.claim_name(client, f"{hostname}:intake", token)
                self._keeper = liveness.Keeper(client, consumer, token=token).start()
                break
            except redis.RedisError as exc:
                log.warning("intake waits for its Redis", error=type(exc).__name__, pause_s=pause)
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_SETUP_PAUSE_S)
        else:
            return None
        self._runtime = Runtime(settings=settings, redis=client, send_task=task_sender(app))
        self._sink = CelerySink(app, hostname, events=bool(app.conf.worker_send_task_events))
        _declare_intake_queue(app)
        return IntakeLoop(self._runtime, consumer=consumer, client=client, sink=self._sink)


def _declare_intake_queue(app: Celery) -> None:
    """Declare the intake queue and its binding, so publishers that route through the queue's
    exchange (not only by its name) find it although no Celery consumer reads it."""
    from kombu.entity import Queue

    from producer import names

    try:
        with app.connection_for_write() as conn:
            queue = Queue(names.INTAKE_QUEUE, routing_key=names.INTAKE_QUEUE)  # type: ignore[no-untyped-call]
            queue(conn.default_channel).declare()  # type: ignore[no-untyped-call]
    except Exception as exc:  # publishing by queue name (what Celery clients do) works without it
        log.warning("could not declare the intake queue", error=type(exc).__name__)

"""The Celery application. Importing this module does no work: configuration is read from the
settings the first time Celery needs it (``app.add_defaults`` takes a promise).

Celery carries only the system's own hints and chores: delivery triggers, token refreshes, the control
queue. Intake messages are not consumed by Celery at all (see :mod:`worker.intake_step`): kombu's
fetch has a window in which a SIGKILL loses the message it popped.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Final

import redis
from celery import Celery, signals
from celery.utils.log import current_process_index
from kombu.entity import Queue

from producer import names
from producer.connect import is_sentinel_url, parse_sentinel_url, sentinel_options, tls_options, tls_params
from worker import providers
from worker.health import HeartbeatStep, clear_ready, write_ready
from worker.intake_step import IntakeStep, task_sender
from worker.logs import get_logger
from worker.pipeline import liveness
from worker.pipeline.runtime import Runtime, default_consumer_name
from worker.redis_client import forget_clients, redis_for
from worker.settings import Settings, get_settings
from worker.side_queues import CONSUMER
from worker.transport import register_bounded_json, transport_for

log = get_logger(__name__)

app = Celery("unsub_relay", include=["worker.tasks"])
#: The exit code Celery's worker in this process stopped with (its ``WorkController.exitcode``).
_stopped_with: dict[str, int] = {}


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration derived from the settings, all in one place."""
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # kombu 5.7: sweep unacknowledged messages back every interval (throttle 1 = every time).
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
        # The restore sweep's lock: a worker killed while holding it blocked every sweep for kombu's
        # default 300 s. Only our own trigger messages are ever unacknowledged; a short lock is safe.
        "unacked_mutex_expire": UNACKED_MUTEX_EXPIRE_S,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    return {
        "broker_url": celery_url(settings.broker_url),
        "broker_transport": transport_for(settings.broker_url),
        "result_backend": celery_url(settings.backend_url),
        "broker_transport_options": transport | sentinel_transport_options(settings, settings.broker_url),
        "result_backend_transport_options": {"retry_policy": {"timeout": 30.0}}
        | sentinel_transport_options(settings, settings.backend_url),
        **sentinel_tls(settings),
        # A task cancelled on a broker connection loss must still record its cancellation, else Celery
        # takes it for revoked and acknowledges its message: the request is lost (Redis restart test).
        "result_backend_always_retry": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        # Celery's messages are hints (delivery triggers, token refreshes): the records they point at
        # live in Redis streams, and the scheduler sends the hint again every tick, so losing one
        # costs a tick. They are still acknowledged after they ran, and a lost pool process requeues
        # its task, so a delivery task killed mid-run runs again under its id and its stored result
        # includes what the killed run recorded (the results add up to the counters). Opt-outs never
        # travel through Celery's consumer (worker.intake_step).
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # SIGTERM: a bounded warm phase, then unfinished messages go back to the queue.
        "worker_soft_shutdown_timeout": settings.shutdown_timeout_s,
        "worker_enable_soft_shutdown_on_idle": True,
        # Flower sees every delivery task and its counts (and intake, from the intake loop's events).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_expires": settings.result_expires_s,
        "task_default_queue": names.CONTROL_QUEUE,
        # Declared so tasks can be sent to any of them; each worker consumes only the queues it is
        # given (`unsub worker` never gives Celery the intake queue: the intake loop reads it).
        "task_queues": [Queue(q, routing_key=q) for q in providers.declared_queues()],  # type: ignore[no-untyped-call]
        "task_create_missing_queues": False,
        # What Celery cannot run on its queues (an unknown task, a body it cannot decode) is handed
        # to the intake door (``unsub.intake``) or dead-lettered with its reason, never dropped.
        "worker_consumer": CONSUMER,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }


#: Seconds a sweep's lock on kombu's unacknowledged messages lives after its holder died.
UNACKED_MUTEX_EXPIRE_S = 10
#: Timeouts of the broker's and result backend's connections to the Sentinels themselves.
SENTINEL_CONNECT_TIMEOUT_S: Final = 5.0
SENTINEL_SOCKET_TIMEOUT_S: Final = 10.0


def celery_url(url: str) -> str:
    """``url`` as Celery reads it: a Sentinel URL with its credentials and DB on every address."""
    return parse_sentinel_url(url).celery_url() if is_sentinel_url(url) else url


def sentinel_transport_options(settings: Settings, url: str) -> dict[str, Any]:
    """kombu's and Celery's Sentinel options for ``url`` (none unless it is a ``sentinel://`` URL):
    the master name, and the Sentinels' password, timeouts and TLS."""
    if not is_sentinel_url(url):
        return {}
    options = settings.sentinel
    sentinel_kwargs = sentinel_options(
        options["sentinel_password"],
        connect_timeout_s=SENTINEL_CONNECT_TIMEOUT_S,
        socket_timeout_s=SENTINEL_SOCKET_TIMEOUT_S,
        tls=tls_options(parse_sentinel_url(url)),
    )
    return {"master_name": options["sentinel_master"], "sentinel_kwargs": sentinel_kwargs}


def sentinel_tls(settings: Settings) -> dict[str, dict[str, str]]:
    """Celery's ``broker_use_ssl`` / ``redis_backend_use_ssl`` for Sentinel URLs that ask for TLS
    (``rediss://`` URLs carry theirs in the URL, which Celery reads itself)."""
    config = {}
    for name, url in (
        ("broker_use_ssl", settings.broker_url),
        ("redis_backend_use_ssl", settings.backend_url),
    ):
        params = tls_params(parse_sentinel_url(url)) if is_sentinel_url(url) else {}
        if params:
            config[name] = params
    return config


register_bounded_json()
app.add_defaults(lambda: celery_config(get_settings()))
app.steps["worker"].add(HeartbeatStep)
app.steps["worker"].add(IntakeStep)
_nodename = "unsub@localhost"
_runtime: Runtime | None = None


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(**_: Any) -> None:
    from worker.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


def stopping_marker(health_dir: Path, main_pid: int) -> Path:
    """File the worker's main process creates when it starts shutting down; its pool processes look
    for it between batches (a SIGTERM reaches only the main process)."""
    return health_dir / f"stopping-{main_pid}"


@signals.celeryd_init.connect  # type: ignore[untyped-decorator]
def _remember_nodename(sender: Any = None, **_: Any) -> None:
    global _nodename
    _nodename = str(sender or _nodename)


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _runtime_after_fork(**_: Any) -> None:
    """Each pool process: fresh Redis connections and its own runtime, with a consumer name that
    stays the same when the worker restarts (so it takes its claims back at once)."""
    global _runtime
    forget_clients()
    settings = get_settings()
    client = redis_for(settings.state_redis_url)
    token = liveness.process_token()
    preferred = f"{_nodename}#{current_process_index()}"
    try:
        consumer = liveness.claim_name(client, preferred, token)
    except redis.RedisError:  # Redis away at start: the keeper's first beats claim the name later
        consumer = preferred
    stop = stopping_marker(settings.health_dir, os.getppid())
    _runtime = Runtime(
        settings=settings,
        redis=client,
        send_task=task_sender(app),
        stop_requested=lambda: _exists(stop),
        consumer_name=consumer,
        keeper_token=token,
    )
    with contextlib.suppress(redis.RedisError):
        _runtime.keeper()


def current_runtime() -> Runtime:
    """This process's runtime: built after the fork in pool processes, on first use elsewhere."""
    global _runtime
    if _runtime is None:
        settings = get_settings()
        _runtime = Runtime(
            settings=settings,
            redis=redis_for(settings.state_redis_url),
            send_task=task_sender(app),
            consumer_name=default_consumer_name(),
        )
    return _runtime


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


@signals.worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(sender: Any = None, **_: Any) -> None:
    health_dir = get_settings().health_dir
    with contextlib.suppress(FileNotFoundError):  # left by an earlier process with the same pid
        stopping_marker(health_dir, os.getpid()).unlink()
    write_ready(health_dir, getattr(sender, "hostname", "worker"))


@signals.worker_shutting_down.connect  # type: ignore[untyped-decorator]
def _not_ready(**_: Any) -> None:
    health_dir = get_settings().health_dir
    clear_ready(health_dir)
    with contextlib.suppress(OSError):  # without it, drains stop at their budget instead
        health_dir.mkdir(parents=True, exist_ok=True)
        stopping_marker(health_dir, os.getpid()).touch()


def celery_exit_code(returned: int | None) -> int:
    """The exit code of the Celery worker that ran in this process, with one log line if it failed.

    ``Celery.start`` returns None whatever happened: since click 7.0 a non-standalone ``main`` hands
    ``ctx.exit(code)`` back as its return value instead of raising ``Exit``, and Celery 5's ``start``
    catches only the ``Exit`` and drops the value. So Celery's "Unrecoverable error" (its worker's
    exit code 1) ended ``unsub worker`` with 0, and a supervisor restarting on failure never restarted
    it. The worker's own exit code, remembered when it stopped, is used instead.
    """
    code = int(returned or _stopped_with.get("code") or 0)
    if code:
        log.critical("Celery's worker stopped on a failure; exiting non-zero", exit_code=code)
    return code


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _remember_exit_code(sender: Any = None, **_: Any) -> None:
    code = getattr(sender, "exitcode", None)
    if isinstance(code, int):
        _stopped_with["code"] = code


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _forget_stopping(**_: Any) -> None:
    with contextlib.suppress(OSError):
        stopping_marker(get_settings().health_dir, os.getpid()).unlink()

"""The Celery application. Importing this module does no work: configuration is read from the
settings the first time Celery needs it (``app.add_defaults`` takes a promise)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

from producer import names
from worker.health import HeartbeatStep, clear_ready, write_ready
from worker.settings import Settings, get_settings
from worker.transport import TRANSPORT

app = Celery("unsub_relay", include=["worker.tasks"])


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery configuration derived from the settings, all in one place."""
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        # kombu 5.7: sweep unacknowledged messages back every interval (throttle 1 = every time).
        "unacked_restore_interval": settings.unacked_restore_interval_s,
        "unacked_restore_throttle": 1,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 25,
        "retry_on_timeout": True,
    }
    return {
        "broker_url": settings.broker_url,
        "broker_transport": TRANSPORT,
        "result_backend": settings.backend_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"retry_policy": {"timeout": 30.0}},
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
        # Reliability: a message leaves Redis only after its task ran; a lost child process requeues it.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # SIGTERM: a bounded warm phase, then unfinished messages go back to the queue.
        "worker_soft_shutdown_timeout": settings.shutdown_timeout_s,
        "worker_enable_soft_shutdown_on_idle": True,
        # Flower sees everything.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_track_started": True,
        "result_expires": settings.result_expires_s,
        "task_default_queue": names.INTAKE_QUEUE,
        "task_queues": [Queue(q, routing_key=q) for q in names.ALL_QUEUES],  # type: ignore[no-untyped-call]
        "task_create_missing_queues": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }


app.add_defaults(lambda: celery_config(get_settings()))
app.steps["worker"].add(HeartbeatStep)


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(**_: Any) -> None:
    from worker.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


def stopping_marker(health_dir: Path, main_pid: int) -> Path:
    """File the worker's main process creates when it starts shutting down; its pool processes look
    for it between batches (a SIGTERM reaches only the main process)."""
    return health_dir / f"stopping-{main_pid}"


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_connections_after_fork(**_: Any) -> None:
    from worker.pipeline import delivery
    from worker.redis_client import forget_clients

    forget_clients()
    delivery.set_stop_check(stopping_marker(get_settings().health_dir, os.getppid()).exists)


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


@signals.worker_shutdown.connect  # type: ignore[untyped-decorator]
def _forget_stopping(**_: Any) -> None:
    with contextlib.suppress(OSError):
        stopping_marker(get_settings().health_dir, os.getpid()).unlink()

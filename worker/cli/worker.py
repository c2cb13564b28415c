"""`unsub worker`: run a Celery worker for some or all queues."""

from __future__ import annotations

import socket
from typing import Annotated

import typer

from producer import names
from worker import providers
from worker.cli._common import ConfigOption, Exit, fail, settings_or_exit


def _queues(selection: str) -> tuple[list[str], bool]:
    """``all``, ``intake``, provider types, or full queue names, comma-separated: the Celery queues
    to consume (always the control queue) and whether to run the intake loop."""
    chosen: list[str] = [names.CONTROL_QUEUE]
    intake = False
    for item in (part.strip() for part in selection.split(",") if part.strip()):
        if item == "all":
            chosen.extend(providers.celery_queues())
            intake = True
        elif item in ("intake", names.INTAKE_QUEUE):
            intake = True
        elif item in providers.types():
            chosen.append(names.delivery_queue(item))
        elif item in providers.celery_queues():
            chosen.append(item)
        else:
            fail(
                f"unknown queue {item!r}: use all, intake, or one of {', '.join(providers.types())}",
                Exit.USAGE,
            )
    return list(dict.fromkeys(chosen)), intake


def worker(
    config: ConfigOption = None,
    queues: Annotated[
        str,
        typer.Option(
            "--queues",
            "-Q",
            help="all, intake, or provider types (cc_partner,whatcounts,...), comma-separated.",
        ),
    ] = "all",
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", "-n", min=1, help="Worker processes (default: settings).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Node name (default unsub@<host>).")] = None,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork, threads or solo.")] = "prefork",
    loglevel: Annotated[str | None, typer.Option(help="Override the log level.")] = None,
) -> None:
    """Run a worker: takes intake and delivery tasks from the chosen queues until stopped.

    SIGTERM finishes or hands back the batch in flight within `shutdown_timeout_s`, then exits 0.
    """
    settings = settings_or_exit(config)
    celery_queues, run_intake = _queues(queues)
    from worker.app import app, celery_exit_code
    from worker.intake_step import RUN_INTAKE, intake_failed

    app.conf.update({RUN_INTAKE: run_intake})
    argv = [
        "worker",
        f"--queues={','.join(celery_queues)}",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--pool={pool}",
        f"--hostname={name or f'unsub@{socket.gethostname()}'}",
        f"--loglevel={loglevel or settings.log_level}",
        "--without-mingle",
        "--without-gossip",
        "--task-events",
    ]
    code = celery_exit_code(app.start(argv=argv))
    if intake_failed():
        code = code or Exit.FAILED
    # Celery reports an unrecoverable error through its exit code; the process must show it.
    raise typer.Exit(int(code or 0))

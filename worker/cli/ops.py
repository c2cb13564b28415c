"""`unsub metrics`, `unsub health` and `unsub flower`: watching the system."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from worker import keys
from worker.cli._common import (
    ConfigOption,
    Exit,
    console,
    err_console,
    fail,
    format_age,
    mask_url,
    runtime_or_exit,
    settings_or_exit,
)
from worker.health import LIVENESS_MAX_AGE_S, heartbeat_age_s, is_ready

LOCAL_ADDRESSES = {"127.0.0.1", "localhost", "::1"}
#: The scheduler's heartbeat older than this makes `unsub health` unhealthy.
SCHEDULER_MAX_AGE_S = 30.0
DEEP_CHECK_TIMEOUT_S = 30.0


def metrics(
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="Port (default: metrics_port setting).")] = None,
    address: Annotated[
        str | None, typer.Option(help="Address to listen on (default: metrics_address setting, 127.0.0.1).")
    ] = None,
) -> None:
    """Serve Prometheus metrics at /metrics, read from Redis on every scrape (correct for any number of
    worker processes; the same numbers as `unsub stats`; a scrape costs the same Redis commands
    whatever the keyspace holds). Runs until SIGTERM or Ctrl-C."""
    rt = runtime_or_exit(config)
    from prometheus_client import start_http_server

    from worker.metrics import registry_for

    listen = port or rt.settings.metrics_port
    bind = address or rt.settings.metrics_address
    server, thread = start_http_server(listen, addr=bind, registry=registry_for(rt.redis, rt.settings))
    err_console.print(f"metrics on http://{bind}:{listen}/metrics", highlight=False)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)


def health(
    config: ConfigOption = None,
    liveness: Annotated[bool, typer.Option("--liveness", help="Only: is this pod's worker alive?")] = False,
    readiness: Annotated[bool, typer.Option("--readiness", help="Only: is this pod's worker ready?")] = False,
    deep: Annotated[
        bool,
        typer.Option("--deep", help="Also prove a worker consumes: a ping task through broker and results."),
    ] = False,
    max_age_s: Annotated[
        float, typer.Option("--max-age", help="Oldest acceptable heartbeat (s).")
    ] = LIVENESS_MAX_AGE_S,
    health_dir: Annotated[Path | None, typer.Option(help="Heartbeat/ready files (default: setting).")] = None,
) -> None:
    """Health for scripts and probes. Exit 0 healthy, 1 unhealthy, 3 Redis unreachable.

    --liveness and --readiness read only this pod's files (no broker call, cheap enough for a probe).
    Without them it checks Redis, the scheduler's heartbeat and the breakers, and prints each check;
    --deep also sends a ping task that a worker on the intake queue must answer.
    """
    settings = settings_or_exit(config)
    directory = health_dir or settings.health_dir
    if liveness or readiness:
        _local_probe(directory, liveness=liveness, readiness=readiness, max_age_s=max_age_s)
        return
    rt = runtime_or_exit(config)
    findings = _system_findings(rt) + ([_deep_finding()] if deep else [])
    _report(findings)
    if not deep:
        console.print("(--deep also has a worker answer a ping task)", style="dim", highlight=False)


def _report(findings: list[Finding]) -> None:
    """Each check on its own line; exit 1 if any failed."""
    for finding in findings:
        if finding.ok:
            console.print(f"  ok: {finding.text}", highlight=False, overflow="fold")
        else:
            err_console.print(f"  [red]unhealthy:[/] {finding.text}", highlight=False, overflow="fold")
    failed = sum(not f.ok for f in findings)
    if failed:
        err_console.print(
            f"[bold red]unhealthy[/]: {failed} of {len(findings)} checks failed", highlight=False
        )
        raise typer.Exit(int(Exit.FAILED))
    console.print(f"[green]healthy[/]: {len(findings)} checks passed", highlight=False)


@dataclass(frozen=True)
class Finding:
    """One health check and what it found."""

    ok: bool
    text: str


def _local_probe(directory: Path, *, liveness: bool, readiness: bool, max_age_s: float) -> None:
    if liveness:
        age = heartbeat_age_s(directory)
        if age is None or age > max_age_s:
            fail(f"no heartbeat in {directory} for {age if age is not None else 'ever'} s", Exit.FAILED)
    if readiness and not is_ready(directory):
        fail(f"worker not ready (no {directory}/ready)", Exit.FAILED)
    console.print("ok")


def _system_findings(rt: object) -> list[Finding]:
    from worker.pipeline.runtime import Runtime
    from worker.pipeline.stats import collect

    assert isinstance(rt, Runtime)
    findings = [Finding(True, f"Redis {mask_url(rt.settings.state_redis_url)} answers")]
    beat = rt.redis.get(keys.SCHEDULER_HEARTBEAT)
    age = None if beat is None else max(time.time() - float(beat), 0.0)
    if age is None or age > SCHEDULER_MAX_AGE_S:
        last = "never" if age is None else f"{format_age(age)} ago"
        findings.append(Finding(False, f"the scheduler is not ticking (last tick {last}; start it)"))
    else:
        findings.append(Finding(True, f"the scheduler ticked {format_age(age)} ago"))
    connections = collect(rt.redis, rt.settings).connections
    opened = [c for c in connections if c.breaker == "open"]
    findings += [Finding(False, f"connection {c.name}: circuit open ({c.breaker_reason})") for c in opened]
    if not connections:
        findings.append(Finding(True, "no connections configured: no breakers to check (give --config)"))
    elif not opened:
        findings.append(Finding(True, f"breakers closed on all {len(connections)} connection(s)"))
    return findings


def _deep_finding() -> Finding:
    from celery.exceptions import TimeoutError as CeleryTimeout

    from producer.names import INTAKE_QUEUE
    from worker.app import app

    started = time.monotonic()
    try:
        reply = app.send_task("unsub.ping", queue=INTAKE_QUEUE).get(timeout=DEEP_CHECK_TIMEOUT_S)
    except CeleryTimeout:
        return Finding(False, f"no worker answered a ping on {INTAKE_QUEUE} in {DEEP_CHECK_TIMEOUT_S:.0f}s")
    if reply != "pong":
        return Finding(False, f"unexpected ping reply {reply!r}")
    took = time.monotonic() - started
    return Finding(
        True, f"a worker on {INTAKE_QUEUE} answered a ping in {took:.2f}s (broker and results work)"
    )


def flower(
    config: ConfigOption = None,
    port: Annotated[int, typer.Option(help="Port.")] = 5555,
    address: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    insecure_local: Annotated[
        bool, typer.Option("--insecure-local", help="Run without authentication, on 127.0.0.1 only.")
    ] = False,
    max_tasks: Annotated[int, typer.Option(help="Tasks Flower keeps in memory.")] = 10_000,
) -> None:
    """Start Flower against the configured broker, with basic auth from the settings.

    Read-only unless `flower_allow_control` is set: remote control of workers, revoke/terminate and
    task publishing answer 403, as does any write not sent from Flower's own pages. Task arguments,
    results and tracebacks are shown with addresses masked, whoever published the task.

    Refuses to start without `flower_user` and `flower_password` (or UNSUB_FLOWER_PASSWORD_FILE)
    unless --insecure-local is given, which also restricts it to 127.0.0.1.
    """
    settings = settings_or_exit(config)
    has_auth = bool(settings.flower_user and settings.flower_password)
    if not has_auth and not insecure_local:
        fail(
            "Flower needs authentication: set flower_user and flower_password (UNSUB_FLOWER_USER, "
            "UNSUB_FLOWER_PASSWORD or UNSUB_FLOWER_PASSWORD_FILE), or pass --insecure-local",
            Exit.USAGE,
        )
    if insecure_local and not has_auth:
        if address not in LOCAL_ADDRESSES:
            fail("--insecure-local only listens on 127.0.0.1", Exit.USAGE)
        os.environ["FLOWER_UNAUTHENTICATED_API"] = "true"
    credentials = None
    if has_auth and settings.flower_password is not None:
        # Handed over in process, not on argv: a command line is visible to every user of the host.
        credentials = f"{settings.flower_user}:{settings.flower_password.get_secret_value()}"
    from worker.app import app
    from worker.flower_guard import serve
    from worker.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    serve(
        app,
        allow_control=settings.flower_allow_control,
        basic_auth=credentials,
        local_only=insecure_local and not has_auth,
        port=port,
        address=address,
        max_tasks=max_tasks,
        purge_offline_workers=300,
    )

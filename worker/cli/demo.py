"""`unsub demo`: run the whole system locally under realistic traffic and check it against the sandbox."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from worker.cli._common import Exit, console, err_console, fail, settings_or_exit

if TYPE_CHECKING:
    from worker.localstack.demo import DemoOptions, DemoResult

RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help="Redis to run on; its DB (default 10) must be empty or the demo's own. "
        "Default: DB 10 of the configured broker's server, else an embedded Redis.",
        show_default=False,
    ),
]
RequestsOption = Annotated[int, typer.Option("--requests", help="Messages to publish (20-5000).")]
TimeoutOption = Annotated[float, typer.Option("--timeout-s", help="Longest wait for every outcome.")]
KeepLogsOption = Annotated[
    Path | None,
    typer.Option("--keep-logs", help="Keep the config and process logs in this directory.", file_okay=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (no progress).")]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def demo(
    redis_url: RedisUrlOption = None,
    requests: RequestsOption = 300,
    timeout_s: TimeoutOption = 120.0,
    keep_logs: KeepLogsOption = None,
    as_json: JsonOption = False,
) -> None:
    """Run the whole system locally and check it: sandbox providers, a worker, the scheduler, a realistic
    mix of requests with an Insider outage and a CC partner JWT expiry; then delivered / retried /
    dead-lettered per connection next to what the sandbox recorded.

    Exit 0 when every check passes, 1 when one fails, 2 bad usage or a Redis DB holding other data,
    3 when an explicit --redis-url does not answer. Stops everything it started, also on Ctrl-C.
    """
    import httpx
    import redis

    from worker.errors import UnsubRelayError
    from worker.localstack import demo as demo_mod
    from worker.localstack.demo_mix import MAX_REQUESTS, MIN_REQUESTS
    from worker.localstack.redis_server import EmbeddedRedisError

    started = time.monotonic()
    if not MIN_REQUESTS <= requests <= MAX_REQUESTS:
        fail(f"--requests must be between {MIN_REQUESTS} and {MAX_REQUESTS}", Exit.USAGE)
    if timeout_s <= 0:
        fail("--timeout-s must be positive", Exit.USAGE)
    explicit = redis_url is not None
    configured = redis_url if redis_url is not None else settings_or_exit(None).broker_url
    say = err_console.print
    try:
        chosen = demo_mod.choose_redis(configured, explicit=explicit)
    except demo_mod.DemoDbInUseError as exc:
        fail(str(exc), Exit.USAGE)
    except (demo_mod.RedisUnavailableError, EmbeddedRedisError) as exc:
        fail(str(exc), Exit.UNAVAILABLE)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not as_json:
            say(f"Redis: {chosen.description}", highlight=False, soft_wrap=True)
        options = demo_mod.DemoOptions(requests=requests, timeout_s=timeout_s, keep_logs=keep_logs)
        result = _run(chosen.url, options, quiet=as_json)
    except KeyboardInterrupt:
        err_console.print("interrupted: everything the demo started is stopped")
        raise typer.Exit(130) from None
    except (UnsubRelayError, redis.RedisError, httpx.HTTPError) as exc:
        # A process that would not start, Redis gone mid-run...: say it plainly (all is stopped).
        fail(f"the demo could not run: {exc}", Exit.FAILED)
    finally:
        chosen.stop()
        signal.signal(signal.SIGTERM, previous)
    elapsed = time.monotonic() - started
    if as_json:
        out = {
            **result.report.as_dict(),
            "ok": result.ok,
            "settled": result.settled,
            "problem": result.problem,
            "redis": chosen.description,
            "requests": result.mix.requests,
            "elapsed_s": round(elapsed, 1),
            "logs": str(result.workdir) if result.workdir else None,
        }
        console.print_json(json.dumps(out))
    else:
        _print(result, elapsed)
    raise typer.Exit(int(Exit.OK if result.ok else Exit.FAILED))


def _run(url: str, options: DemoOptions, *, quiet: bool) -> DemoResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from worker.localstack.demo import run_demo

    if quiet:
        return run_demo(url, options)
    columns = (TextColumn("outcomes"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("outcomes", total=None)

        def stage(text: str) -> None:
            bar.console.print(text, highlight=False, soft_wrap=True)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return run_demo(url, options, stage=stage, progress=progress)


def _print(result: DemoResult, elapsed_s: float) -> None:
    from worker.localstack.demo_report import check_lines, render

    console.print(render(result.report))
    for line in check_lines(result.report):
        console.print(line, highlight=False)
    if result.problem:
        console.print(f"[bold red]not settled:[/] {result.problem}", highlight=False)
    if result.workdir is not None:
        console.print(f"config and logs kept in {result.workdir}", highlight=False)
    verdict = "[green]every check passed[/]" if result.ok else "[bold red]some checks failed[/]"
    console.print(f"{verdict} ({result.mix.requests} messages, {elapsed_s:.1f} s)", highlight=False)

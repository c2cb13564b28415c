"""`unsub demo`: run the whole system locally under realistic traffic and check it against the sandbox."""

from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from rich.text import Text

from worker.cli._common import (
    Exit,
    console,
    err_console,
    fail,
    format_age,
    mask_url,
    require_dev_tools,
    settings_or_exit,
)
from worker.cli._tables import Cell, Column, Records

if TYPE_CHECKING:
    from unsub_dev.localstack.demo import DemoOptions, DemoRedis, DemoResult, Leftover
    from unsub_dev.localstack.demo_report import Report

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
#: The connections the demo runs (same names and types), for inspecting what it left.
EXAMPLE_CONFIG: Final = "worker/examples/sandbox.yaml"
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON (no progress).")]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


CleanOption = Annotated[
    bool,
    typer.Option(
        "--clean", help="Remove what earlier demos left in the demo's DB (only a DB carrying its marker)."
    ),
]


def demo(
    redis_url: RedisUrlOption = None,
    requests: RequestsOption = 300,
    timeout_s: TimeoutOption = 120.0,
    keep_logs: KeepLogsOption = None,
    as_json: JsonOption = False,
    clean: CleanOption = False,
) -> None:
    """Run the whole system locally and check it: sandbox providers, a worker, the scheduler, a realistic
    mix of requests with an Insider outage and a CC partner JWT expiry; then delivered / retried /
    dead-lettered per connection next to what the sandbox recorded.

    Exit 0 when every check passes, 1 when one fails, 2 bad usage or a Redis DB holding other data,
    3 when an explicit --redis-url does not answer. Stops everything it started, also on Ctrl-C.
    Its keys stay in its Redis DB for inspection (`unsub stats`, `unsub status`) until --clean.
    A development tool: it needs the ``dev`` extra (scripts/demo installs it).
    """
    require_dev_tools("demo")
    from unsub_dev.localstack import demo as demo_mod
    from unsub_dev.localstack.demo_mix import MAX_REQUESTS, MIN_REQUESTS

    started = time.monotonic()
    if not MIN_REQUESTS <= requests <= MAX_REQUESTS:
        fail(f"--requests must be between {MIN_REQUESTS} and {MAX_REQUESTS}", Exit.USAGE)
    if timeout_s <= 0:
        fail("--timeout-s must be positive", Exit.USAGE)
    explicit = redis_url is not None
    configured = _checked(redis_url) if redis_url is not None else settings_or_exit(None).broker_url
    if clean:
        _clean(demo_mod.demo_db_url(configured, explicit=explicit))
        return
    chosen = _choose(configured, explicit=explicit)
    options = demo_mod.DemoOptions(requests=requests, timeout_s=timeout_s, keep_logs=keep_logs)
    result, left = _run_on(chosen, options, quiet=as_json)
    elapsed = time.monotonic() - started
    if as_json:
        console.print_json(json.dumps(_as_json(result, chosen, elapsed, left)))
    else:
        _print(result, elapsed, chosen, left, explicit=explicit)
    raise typer.Exit(int(Exit.OK if result.ok else Exit.FAILED))


def _checked(url: str) -> str:
    """An explicit --redis-url, checked as the settings check a broker URL (the demo's Celery uses it)."""
    from worker.urls import RedisUse, check_redis_url

    try:
        return check_redis_url(url, RedisUse.CELERY)
    except ValueError as exc:
        fail(f"--redis-url: {exc}", Exit.USAGE)


def _clean(url: str) -> None:
    import redis

    from unsub_dev.errors import DemoDbInUseError
    from unsub_dev.localstack import demo as demo_mod

    try:
        removed = demo_mod.clean_demo_db(url)
    except DemoDbInUseError as exc:
        fail(str(exc), Exit.USAGE)
    except redis.RedisError as exc:
        fail(f"cannot reach Redis at {mask_url(url)}: {exc}", Exit.UNAVAILABLE)
    console.print(f"removed {removed} key(s) from {mask_url(url)}", highlight=False)


def _choose(configured: str, *, explicit: bool) -> DemoRedis:
    from unsub_dev.errors import DemoDbInUseError, EmbeddedRedisError, RedisUnavailableError
    from unsub_dev.localstack import demo as demo_mod

    try:
        return demo_mod.choose_redis(configured, explicit=explicit)
    except DemoDbInUseError as exc:
        fail(str(exc), Exit.USAGE)
    except (RedisUnavailableError, EmbeddedRedisError) as exc:
        fail(str(exc), Exit.UNAVAILABLE)


def _run_on(chosen: DemoRedis, options: DemoOptions, *, quiet: bool) -> tuple[DemoResult, Leftover | None]:
    """Run the demo on the chosen Redis; what it leaves there (None for an embedded Redis, gone after)."""
    import httpx
    import redis

    from unsub_dev.localstack.demo import leftover
    from worker.errors import UnsubRelayError

    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if not quiet:
            err_console.print(f"Redis: {chosen.description}", highlight=False, soft_wrap=True)
        result = _run(chosen.url, options, quiet=quiet)
        return result, None if chosen.embedded is not None else leftover(chosen.url)
    except KeyboardInterrupt:
        err_console.print("interrupted: everything the demo started is stopped")
        raise typer.Exit(130) from None
    except (UnsubRelayError, redis.RedisError, httpx.HTTPError) as exc:
        # A process that would not start, Redis gone mid-run...: say it plainly (all is stopped).
        fail(f"the demo could not run: {exc}", Exit.FAILED)
    finally:
        chosen.stop()
        signal.signal(signal.SIGTERM, previous)


def _as_json(
    result: DemoResult, chosen: DemoRedis, elapsed_s: float, left: Leftover | None
) -> dict[str, Any]:
    return {
        **result.report.as_dict(),
        "ok": result.ok,
        "settled": result.settled,
        "problem": result.problem,
        "redis": chosen.description,
        "requests": result.mix.requests,
        "elapsed_s": round(elapsed_s, 1),
        "logs": str(result.workdir) if result.workdir else None,
        "left_in_redis": None if left is None else {"url": mask_url(chosen.url), **asdict(left)},
    }


def _run(url: str, options: DemoOptions, *, quiet: bool) -> DemoResult:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from unsub_dev.localstack.demo import run_demo

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


#: The table's columns: the system's counters, then what the sandbox recorded.
COLUMNS: Final = (
    Column("connection"),
    Column("delivered", numeric=True),
    Column("retried", numeric=True),
    Column("dead-lettered"),
    Column("sandbox", numeric=True),
    Column("check"),
)


def render(report: Report) -> Records:
    """One row per connection (its account under its name); a table when it fits, else blocks."""
    from unsub_dev.localstack.demo_report import mark, reasons_text

    rows: list[list[Cell]] = []
    for r in report.rows:
        account = r.recorded_at.partition(" ")[2]
        name = Text(r.connection)
        if account:
            name.append(f"\n{account}", style="dim")
        rows.append(
            [
                name,
                str(r.delivered),
                str(r.retried),
                reasons_text(r.dead, "\n"),
                str(r.sandbox_unsubscribed),
                Text.from_markup(mark(r.ok)),
            ]
        )
    return Records(COLUMNS, rows, title="the system's counters next to the sandbox's state")


def _print(
    result: DemoResult, elapsed_s: float, chosen: DemoRedis, left: Leftover | None, *, explicit: bool
) -> None:
    from unsub_dev.localstack.demo_report import check_lines

    console.print(render(result.report))
    for line in check_lines(result.report):
        console.print(line, highlight=False)
    if result.problem:
        console.print(f"[bold red]not settled:[/] {result.problem}", highlight=False)
    if result.workdir is not None:
        console.print(f"config and logs kept in {result.workdir}", highlight=False)
    verdict = "[green]every check passed[/]" if result.ok else "[bold red]some checks failed[/]"
    console.print(f"{verdict} ({result.mix.requests} messages, {elapsed_s:.1f} s)", highlight=False)
    for line in leftover_lines(mask_url(chosen.url), left, explicit=explicit) if left else []:
        console.print(line, highlight=False, soft_wrap=True)  # commands stay whole, to copy


def leftover_lines(url: str, left: Leftover, *, explicit: bool) -> list[str]:
    """What the demo leaves in its DB, how long it stays, how to look at it and how to remove it."""
    lasting = left.keys - left.expiring
    clean = f"unsub demo --clean{f' --redis-url {url}' if explicit else ''}"
    return [
        f"the demo's {left.keys} keys stay in {url}: {left.expiring} expire within "
        f"{format_age(left.longest_ttl_s)}, {lasting} (counters, the marker) until removed",
        f"  inspect: UNSUB_BROKER_URL={url} unsub stats --config {EXAMPLE_CONFIG}",
        f"  remove:  {clean}",
    ]

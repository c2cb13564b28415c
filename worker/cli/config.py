"""`unsub config`: check and show the configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import AnyUrl, SecretStr

from worker.cli._common import (
    ConfigOption,
    Exit,
    console,
    mask_url,
    settings_or_exit,
)
from worker.cli._tables import Pairs
from worker.errors import ConfigError
from worker.settings import CONFIG_ENV_VAR, Settings, load_settings

app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)

_COMMON = {"name", "type", "base_url", "enabled", "rate_limit", "retry", "breaker"}
NO_CONNECTIONS = "no connections configured: nothing would be delivered"


def _shown(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return "*** (set)" if value.get_secret_value() else "(empty)"
    if isinstance(value, AnyUrl):
        return mask_url(str(value))
    return value


def connection_rows(settings: Settings) -> list[dict[str, Any]]:
    """Each connection as a flat mapping, secrets and URL credentials masked."""
    rows = []
    for conn in settings.connections:
        fields = {name: getattr(conn, name) for name in type(conn).model_fields}
        rows.append(
            {
                "name": conn.name,
                "type": conn.type,
                "base_url": mask_url(str(conn.base_url)),
                "enabled": conn.enabled,
                "rate_limit": conn.rate_limit,
                "options": {k: _shown(v) for k, v in fields.items() if k not in _COMMON},
                "retry": conn.retry.model_dump(),
                "breaker": conn.breaker.model_dump(),
            }
        )
    return rows


def summary(settings: Settings, config: Path | None) -> dict[str, Any]:
    """What `config check` reports about a valid configuration (the text form shows the same)."""
    rows = connection_rows(settings)
    return {
        "ok": True,
        "config_file": str(config) if config else None,
        "broker_url": mask_url(settings.broker_url),
        "result_backend": mask_url(settings.backend_url),
        "state_redis_url": mask_url(settings.state_redis_url),
        "sentinel_master": settings.sentinel_master,
        "publish_replicas": settings.publish_replicas,
        "connections": rows,
        "warnings": [] if rows else [NO_CONNECTIONS],
    }


@app.command("check")
def check(
    config: ConfigOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON (also when invalid).")
    ] = False,
) -> None:
    """Load the settings and print the connections (secrets masked).

    Exit 0 when the configuration is valid, 2 (with every problem listed, one line each, naming the
    field) when it is not, or when the config file cannot be read or parsed.
    """
    if not as_json:
        _print(summary(settings_or_exit(config), config))
        return
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        _print_json({"ok": False, "config_file": str(config) if config else None, "problems": exc.problems})
        raise typer.Exit(int(Exit.USAGE)) from None
    _print_json(summary(settings, config))


def _print_json(data: dict[str, Any]) -> None:
    console.print_json(json.dumps(data, default=str))


def _print(shown: dict[str, Any]) -> None:
    source = shown["config_file"] or f"none (give --config FILE or set {CONFIG_ENV_VAR})"
    console.print(f"config file: {source}", highlight=False, overflow="fold")
    for label, key in (("broker", "broker_url"), ("results", "result_backend"), ("state", "state_redis_url")):
        console.print(f"{label}: {shown[key]}", highlight=False, overflow="fold")
    if shown["sentinel_master"]:
        console.print(f"sentinel master: {shown['sentinel_master']}", highlight=False, overflow="fold")
    console.print(f"publishes wait for {shown['publish_replicas']} replica(s)", highlight=False)
    rows = shown["connections"]
    console.print(f"{len(rows)} connection(s)", style="italic", highlight=False)
    for row in rows:
        pairs = [(k, str(row[k])) for k in ("type", "enabled", "rate_limit", "base_url")]
        pairs += [(k, str(v)) for k, v in row["options"].items() if v is not None]
        for policy in ("retry", "breaker"):
            pairs += [(f"{policy}.{k}", str(v)) for k, v in row[policy].items()]
        console.print(Pairs(row["name"], pairs))
    for warning in shown["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    if not rows:
        console.print(f"  give --config FILE or set {CONFIG_ENV_VAR}; see worker/examples/sandbox.yaml")
    console.print("[green]configuration OK[/]")

"""`unsub sandbox`: serve the provider sandbox (fake CC, WhatCounts, Insider, easy.tools) over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from worker.cli._common import Exit, err_console, require_dev_tools

HostOption = Annotated[str, typer.Option("--host", help="Address to listen on.")]
PortOption = Annotated[int, typer.Option("--port", help="Port to listen on.")]
SandboxConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Sandbox seed file (YAML), merged over the built-in seed. See docs/sandbox.md.",
        exists=True,
        dir_okay=False,
    ),
]


def sandbox(
    host: HostOption = "127.0.0.1", port: PortOption = 8025, config: SandboxConfigOption = None
) -> None:
    """Serve fake provider APIs with the credentials of worker/examples/sandbox.yaml.

    State, reset, seeding and fault injection live under /_sandbox (docs/sandbox.md). Ctrl-C stops it.
    A development tool: it needs the ``dev`` extra (scripts/demo installs it).
    """
    require_dev_tools("sandbox")
    import uvicorn
    from pydantic import ValidationError

    from unsub_dev.sandbox.app import Sandbox
    from unsub_dev.sandbox.config import load_config
    from unsub_dev.sandbox.server import uvicorn_config

    try:
        settings = load_config(config)
    except (ValidationError, ValueError, OSError) as exc:
        err_console.print(f"[red]bad sandbox config[/red]: {exc}")
        raise typer.Exit(Exit.USAGE) from None
    err_console.print(f"sandbox on http://{host}:{port} (state: http://{host}:{port}/_sandbox/state)")
    uvicorn.Server(uvicorn_config(Sandbox(settings), host, port, log_level="info")).run()

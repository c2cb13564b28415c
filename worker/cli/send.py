"""`unsub send EMAIL`: publish one unsubscribe request and print its request id."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from producer.contract import Scope, Source
from producer.errors import InvalidRequestError, PublishError
from worker.cli._common import ConfigOption, Exit, console, err_console, fail, producer_for, settings_or_exit
from worker.cli._rows import RowDefaults, known_connections, row_to_request


def send(
    email: Annotated[str, typer.Argument(help="The address that opted out.")],
    scope: Annotated[
        Scope | None,
        typer.Option(
            "--scope", help="Default: global, or list with --list/--group (global with them: exit 2)."
        ),
    ] = None,
    connection: Annotated[
        list[str] | None,
        typer.Option(
            "--connection",
            help="Deliver to this connection (repeatable). Default: all. Must be a configured connection "
            "when the configuration has any; without configuration any name is sent.",
        ),
    ] = None,
    list_id: Annotated[
        list[str] | None, typer.Option("--list", help="WhatCounts list id (repeatable).")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="Insider unsubscribe group.")] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="Why the person opted out.")] = None,
    source: Annotated[
        Source | None, typer.Option("--source", help="Who initiated it. Default: Contact.")
    ] = None,
    customer_key: Annotated[
        str | None, typer.Option("--customer-key", help="WhatCounts Customer Key.")
    ] = None,
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="Idempotency key. Default: new.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Publish one request to the intake queue and print its request id.

    Exit 2 for invalid input (nothing sent): a field breaking the contract, --scope global with
    --list or --group (that would widen the opt-out), or a --connection the loaded configuration
    does not have (without configured connections, names are not checked). Exit 3 when the broker
    is unreachable.
    """
    settings = settings_or_exit(config)
    fields: dict[str, Any] = {
        "email": email,
        "scope": scope.value if scope else None,
        "connections": connection or None,
        "list_ids": list_id or None,
        "group": group,
        "reason": reason,
        "source": source.value if source else None,
        "customer_key": customer_key,
        "request_id": request_id,
    }
    defaults = RowDefaults(
        configured=tuple(c.name for c in settings.enabled_connections), known=known_connections(settings)
    )
    try:
        request = row_to_request(fields, defaults)
    except InvalidRequestError as exc:
        err_console.print("[bold red]invalid request:[/]", highlight=False)
        for problem in exc.problems:
            err_console.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(int(Exit.USAGE)) from None
    try:
        with producer_for(settings) as producer:
            request_id = producer.publish(request)
    except PublishError as exc:
        fail(str(exc), Exit.UNAVAILABLE)
    console.print(request_id, highlight=False, soft_wrap=True)

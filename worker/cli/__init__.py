"""The `unsub` command line."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from worker.cli import config as config_cmd
from worker.cli import dlq as dlq_cmd
from worker.cli._help import CleanHelpGroup
from worker.cli.demo import demo
from worker.cli.importer import import_
from worker.cli.ops import flower, health, metrics
from worker.cli.sandbox import sandbox
from worker.cli.scheduler import scheduler
from worker.cli.send import send
from worker.cli.stats import stats, status
from worker.cli.worker import worker

DISTRIBUTION = "unsub-relay"

app = typer.Typer(
    name="unsub",
    cls=CleanHelpGroup,
    help="unsub-relay: carry unsubscribe requests to every email provider that must honour them.\n\n"
    "Exit codes: 0 success, 1 the command ran and found a failure, 2 bad usage or configuration, "
    "3 a service it needs (Redis) is unreachable.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(dlq_cmd.app, name="dlq")
app.command("worker")(worker)
app.command("scheduler")(scheduler)
app.command("stats")(stats)
app.command("status")(status)
app.command("metrics")(metrics)
app.command("health")(health)
app.command("flower")(flower)
app.command("send")(send)
app.command("import")(import_)
app.command("sandbox")(sandbox)
app.command("demo")(demo)


def installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"unsub {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    return None


def main() -> None:
    app()

"""The `unsub` command line."""

from __future__ import annotations

import typer

from worker.cli import config as config_cmd
from worker.cli import dlq as dlq_cmd
from worker.cli.demo import demo
from worker.cli.importer import import_
from worker.cli.ops import flower, health, metrics
from worker.cli.sandbox import sandbox
from worker.cli.scheduler import scheduler
from worker.cli.send import send
from worker.cli.stats import stats, status
from worker.cli.worker import worker

app = typer.Typer(
    name="unsub",
    help="unsub-relay: carry unsubscribe requests to every email provider that must honour them.\n\n"
    "Exit codes: 0 success, 1 the command ran and found a failure, 2 bad usage or configuration, "
    "3 a service it needs (Redis) is unreachable.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
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


def main() -> None:
    app()

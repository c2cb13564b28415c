"""`unsub dlq`: inspect, replay, purge and export dead letters."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from producer.contract import normalize_email
from worker.cli._common import (
    ConfigOption,
    Exit,
    console,
    err_console,
    fail,
    format_age,
    parse_when,
    runtime_or_exit,
)
from worker.pipeline import deadletters, replay
from worker.pipeline.deadletters import DeadLetter, Filter

app = typer.Typer(help="Inspect, replay, purge and export dead letters.", no_args_is_help=True)

ConnectionOpt = Annotated[str | None, typer.Option("--connection", help="Only this connection.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Only this reason code.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Dead-lettered since: 2h, 7d or an ISO time.")]
BeforeOpt = Annotated[
    str | None, typer.Option("--before", help="Dead-lettered before: 2h, 7d or an ISO time.")
]
IdsArg = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter matching the filters.")]


def _filter(
    connection: str | None, reason: str | None, since: str | None, before: str | None = None
) -> Filter:
    return Filter(
        connection=connection,
        reason=reason,
        since=parse_when(since) if since else None,
        before=parse_when(before) if before else None,
    )


def _selected(rt: Any, ids: list[str] | None, use_all: bool, which: Filter) -> list[DeadLetter]:
    """The dead letters an operator means: by id, or ``--all`` matching the filters."""
    filtered = any(v is not None for v in (which.connection, which.reason, which.since, which.before))
    if ids and (use_all or filtered):
        fail("give ids, or --all with filters, not both", Exit.USAGE)
    if not ids and not use_all:
        fail(
            "name dead-letter ids, or pass --all (with --connection/--reason/--since to narrow it)",
            Exit.USAGE,
        )
    if ids:
        letters = [deadletters.get(rt.redis, i) for i in ids]
        missing = [i for i, letter in zip(ids, letters, strict=True) if letter is None]
        if missing:
            fail(f"no dead letter with id {', '.join(missing)}", Exit.FAILED)
        return [letter for letter in letters if letter is not None]
    return list(deadletters.scan(rt.redis, which))


def _progress(total: int, label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        disable=total < 2,
        transient=True,
    )


@app.command("list")
def list_(
    connection: ConnectionOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    limit: Annotated[int, typer.Option(help="Show at most this many.", min=1)] = 50,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table.")] = False,
) -> None:
    """Dead letters, oldest first (addresses masked)."""
    rt = runtime_or_exit(config)
    which = _filter(connection, reason, since)
    letters = list(deadletters.scan(rt.redis, which, limit=limit))
    total = deadletters.count(rt.redis, which)
    if as_json:
        for letter in letters:
            sys.stdout.write(letter.model_dump_json(exclude={"email", "record", "request", "raw"}) + "\n")
        return
    console.print(f"{len(letters)} of {total} dead letter(s), oldest first", highlight=False)
    now = time.time()
    for d in letters:
        status = f" status={d.status}" if d.status else ""
        age = format_age(now - d.dead_at)
        console.print(
            f"[bold]{d.id}[/]  {age} ago  {d.connection or '-'}  [yellow]{d.reason}[/]  "
            f"{d.email_masked or '-'}  tries={d.attempts}{status}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"    {d.message[:300]}", highlight=False, markup=False, soft_wrap=True)


@app.command("show")
def show(
    letter_id: Annotated[str, typer.Argument(help="Dead-letter id.")],
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show the full address (for replay work).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Everything about one dead letter."""
    rt = runtime_or_exit(config)
    letter = deadletters.get(rt.redis, letter_id)
    if letter is None:
        fail(f"no dead letter with id {letter_id}", Exit.FAILED)
    shown = letter.model_dump(mode="json", exclude_none=True)
    if not reveal:
        shown.pop("email", None)
        for nested in ("record", "request"):
            if nested in shown:
                shown[nested]["email"] = letter.email_masked
        if "raw" in shown:
            shown["raw"] = "(hidden: may hold the address; use --reveal)"
    console.print_json(json.dumps(shown))


@app.command("replay")
def replay_(
    ids: IdsArg = None,
    use_all: AllOpt = False,
    connection: ConnectionOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    customer_key: Annotated[
        str | None, typer.Option("--customer-key", help="The Customer Key now known (one id only).")
    ] = None,
    customer_keys: Annotated[
        Path | None, typer.Option("--customer-keys", help="CSV with columns email,customer_key.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Put dead letters back for delivery after the cause was fixed (fresh retry schedule).

    Exit 0 when everything selected was re-queued, 1 when some could not be (listed with the reason).
    """
    rt = runtime_or_exit(config)
    letters = _selected(rt, ids, use_all, _filter(connection, reason, since))
    keys_by_email = _customer_keys(letters, customer_key, customer_keys)
    with _progress(len(letters), "replaying") as bar:
        task = bar.add_task("replay", total=len(letters))
        report = replay.replay(
            rt, letters, customer_keys=keys_by_email, progress=lambda n: bar.advance(task, n)
        )
    console.print(f"replayed {report.replayed} dead letter(s) as {report.deliveries} delivery(ies)")
    for letter_id, why in report.skipped.items():
        err_console.print(f"  not replayed {letter_id}: {why}", highlight=False, markup=False)
    if report.skipped:
        raise typer.Exit(int(Exit.FAILED))


def _customer_keys(letters: list[DeadLetter], single: str | None, path: Path | None) -> dict[str, str]:
    if single is not None:
        if len(letters) != 1 or not letters[0].email:
            fail("--customer-key goes with exactly one dead-letter id", Exit.USAGE)
        return {letters[0].email: single}
    if path is None:
        return {}
    keys: dict[str, str] = {}
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    keys[normalize_email(row.get("email") or "")] = (row.get("customer_key") or "").strip()
                except ValueError:
                    fail(f"{path}:{line}: not a valid email address", Exit.USAGE)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}", Exit.USAGE)
    return {email: key for email, key in keys.items() if key}


@app.command("purge")
def purge(
    ids: IdsArg = None,
    use_all: AllOpt = False,
    connection: ConnectionOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    before: BeforeOpt = None,
    yes: Annotated[bool, typer.Option("--yes", help="Really delete (required).")] = False,
    config: ConfigOption = None,
) -> None:
    """Delete dead letters for good (they are not delivered). Requires --yes."""
    rt = runtime_or_exit(config)
    letters = _selected(rt, ids, use_all, _filter(connection, reason, since, before))
    if not yes:
        fail(f"this would delete {len(letters)} dead letter(s) for good; add --yes to do it", Exit.USAGE)
    with _progress(len(letters), "purging") as bar:
        task = bar.add_task("purge", total=len(letters))
        deleted = replay.purge(rt, letters, progress=lambda n: bar.advance(task, n))
    console.print(f"purged {deleted} dead letter(s)")


@app.command("export")
def export(
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv.")] = "jsonl",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")
    ] = None,
    reveal: Annotated[bool, typer.Option("--reveal", help="Full addresses instead of masked ones.")] = False,
    connection: ConnectionOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    config: ConfigOption = None,
) -> None:
    """Write dead letters as JSON lines or CSV, for analysis or for fixing data upstream."""
    if fmt not in {"jsonl", "csv"}:
        fail("--format must be jsonl or csv", Exit.USAGE)
    rt = runtime_or_exit(config)
    lines = replay.export_lines(
        deadletters.scan(rt.redis, _filter(connection, reason, since)), fmt=fmt, reveal=reveal
    )
    written = _write_lines(lines, output) - (1 if fmt == "csv" else 0)
    err_console.print(f"exported {written} dead letter(s)", highlight=False)


def _write_lines(lines: Iterator[str], output: Path | None) -> int:
    """Write every line; returns how many lines were written."""
    handle = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    written = 0
    try:
        for line in lines:
            handle.write(line)
            written += 1
    finally:
        if output:
            handle.close()
    return written

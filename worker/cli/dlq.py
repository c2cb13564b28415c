"""`unsub dlq`: inspect, replay, purge and export dead letters.

Addresses are masked everywhere unless ``--reveal`` is given (``show`` and ``export``); every reveal
is logged at WARNING on stderr: who, which command, which letters (with their addresses masked).
"""

from __future__ import annotations

import csv
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any, Final

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
from worker.logs import configure_logging, get_logger
from worker.pipeline import deadletters, replay
from worker.pipeline.deadletters import DeadLetter, Filter

app = typer.Typer(
    help="Inspect, replay, purge and export dead letters. They are deleted dlq_retention_s (default "
    "90 days) after they died: export what you must keep longer.",
    no_args_is_help=True,
)
log = get_logger(__name__)

#: Letter ids named in one reveal log line (a large export logs several lines).
REVEAL_IDS_PER_LINE: Final = 200

ConnectionOpt = Annotated[str | None, typer.Option("--connection", help="Only this connection.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Only this reason code.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="Dead-lettered since: 2h, 7d or an ISO time.")]
BeforeOpt = Annotated[
    str | None, typer.Option("--before", help="Dead-lettered before: 2h, 7d or an ISO time.")
]
IdsArg = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids.", show_default=False)]
AllOpt = Annotated[bool, typer.Option("--all", help="Every dead letter matching the filters.")]


def _runtime(config: Path | None) -> Any:
    """Settings and Redis, with logging on stderr (stdout may carry an export) at WARNING or more
    detail, whatever ``log_level`` says: a reveal is always logged."""
    rt = runtime_or_exit(config)
    level = rt.settings.log_level
    if logging.getLevelName(level) > logging.WARNING:
        level = "WARNING"
    configure_logging(level, rt.settings.log_format, sys.stderr)
    return rt


def _log_reveal(command: str, letters: list[DeadLetter]) -> None:
    """A WARNING line saying who revealed which letters with which command (addresses masked)."""
    log.warning(
        "dead-letter addresses revealed",
        operator=_operator(),
        command=f"unsub dlq {command} --reveal",
        letter_ids=[letter.id for letter in letters],
        emails=[letter.email_masked or "-" for letter in letters],
    )


def _operator() -> str:
    """Who runs this command, as far as this process can tell."""
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a container's numeric user)
        name = "?"
    return f"{name} (uid {os.getuid()})"


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
    """Dead letters, oldest first (addresses masked; times in --json are ISO 8601 UTC)."""
    rt = _runtime(config)
    which = _filter(connection, reason, since)
    letters = list(deadletters.scan(rt.redis, which, limit=limit))
    total = deadletters.count(rt.redis, which)
    if as_json:
        for letter in letters:
            row = replay.shown(letter, reveal=False, exclude=("record", "request", "raw"))
            sys.stdout.write(json.dumps(row, separators=(",", ":")) + "\n")
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
        message = replay.shown(d, reveal=False)["message"]
        console.print(f"    {message[:300]}", highlight=False, markup=False, soft_wrap=True)


@app.command("show")
def show(
    letter_id: Annotated[str, typer.Argument(help="Dead-letter id.")],
    reveal: Annotated[
        bool, typer.Option("--reveal", help="Show the full address (for replay work).")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Everything about one dead letter (addresses masked unless --reveal; a reveal is logged)."""
    rt = _runtime(config)
    letter = deadletters.get(rt.redis, letter_id)
    if letter is None:
        fail(f"no dead letter with id {letter_id}", Exit.FAILED)
    if reveal:
        _log_reveal("show", [letter])
    row = replay.shown(letter, reveal=reveal)
    console.print_json(json.dumps({k: v for k, v in row.items() if v is not None}))


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
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only say what would be replayed; change nothing.")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Put dead letters back for delivery after the cause was fixed (fresh retry schedule).

    Exit 0 when everything selected was (or, with --dry-run, would be) re-queued, 1 when some could
    not be (listed with the reason).
    """
    rt = _runtime(config)
    letters = _selected(rt, ids, use_all, _filter(connection, reason, since))
    keys_by_email = _customer_keys(letters, customer_key, customer_keys)
    with _progress(len(letters), "replaying") as bar:
        task = bar.add_task("replay", total=len(letters))
        report = replay.replay(
            rt,
            letters,
            customer_keys=keys_by_email,
            progress=lambda n: bar.advance(task, n),
            dry_run=dry_run,
        )
    _print_replay(report, dry_run)
    if report.skipped:
        raise typer.Exit(int(Exit.FAILED))


def _print_replay(report: replay.ReplayReport, dry_run: bool) -> None:
    if dry_run:
        console.print(
            f"dry run: would replay {report.replayed} dead letter(s) as {report.deliveries} "
            "delivery(ies); nothing changed",
            highlight=False,
        )
        for letter_id, deliveries in report.planned.items():
            console.print(f"  {letter_id} → {', '.join(deliveries)}", highlight=False, markup=False)
    else:
        console.print(f"replayed {report.replayed} dead letter(s) as {report.deliveries} delivery(ies)")
    verb = "would not replay" if dry_run else "not replayed"
    for letter_id, why in report.skipped.items():
        err_console.print(f"  {verb} {letter_id}: {why}", highlight=False, markup=False)


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
    """Delete dead letters for good (they are not delivered). Requires --yes.

    Export first what must be kept (`unsub dlq export`). Letters older than dlq_retention_s are
    deleted by the scheduler anyway.
    """
    rt = _runtime(config)
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
    """Write dead letters as JSON lines or CSV (times ISO 8601 UTC), for analysis, for fixing data
    upstream, or to keep them past dlq_retention_s. A reveal is logged with the letter ids."""
    if fmt not in {"jsonl", "csv"}:
        fail("--format must be jsonl or csv", Exit.USAGE)
    rt = _runtime(config)
    letters: Iterable[DeadLetter] = deadletters.scan(rt.redis, _filter(connection, reason, since))
    if reveal:
        letters = _logged_reveals(letters)
    lines = replay.export_lines(letters, fmt=fmt, reveal=reveal)
    written = _write_lines(lines, output) - (1 if fmt == "csv" else 0)
    err_console.print(f"exported {written} dead letter(s)", highlight=False)


def _logged_reveals(letters: Iterable[DeadLetter]) -> Iterator[DeadLetter]:
    """Pass the letters through, logging them as revealed a chunk at a time (before they are shown)."""
    chunk: list[DeadLetter] = []
    for letter in letters:
        chunk.append(letter)
        if len(chunk) == REVEAL_IDS_PER_LINE:
            _log_reveal("export", chunk)
            yield from chunk
            chunk = []
    if chunk:
        _log_reveal("export", chunk)
        yield from chunk


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

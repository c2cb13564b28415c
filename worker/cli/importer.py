"""`unsub import FILE`: publish a CSV or JSONL suppression list, streaming, with a rejects file.

Rows are read, validated and published one chunk (one intake task message) at a time, so memory
stays flat for millions of rows. Rows without a ``request_id`` get a deterministic one (file name,
line and address), so importing the same file again is harmless: intake drops request ids it has
seen within the status retention.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any, Final

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from producer.base import DEFAULT_CHUNK_SIZE, MAX_CHUNK_SIZE
from producer.client import Producer
from producer.contract import Scope, Source, UnsubscribeRequest
from producer.errors import InvalidRequestError, PublishError
from worker.cli._common import (
    ConfigOption,
    Exit,
    console,
    err_console,
    fail,
    mask_url,
    producer_for,
    settings_or_exit,
)
from worker.cli._readers import (
    READ_BUFFER_BYTES,
    CountingReader,
    FileFormatError,
    Format,
    Row,
    detect_format,
    read_rows,
)
from worker.cli._rows import (
    RowDefaults,
    import_request_id,
    known_connections,
    row_to_request,
    unknown_connections,
)
from worker.settings import Settings

#: Rejected rows printed on the terminal; the rest are only in the rejects file.
SHOWN_REJECTS: Final = 10
#: Rows between two progress-bar refreshes.
PROGRESS_EVERY_ROWS: Final = 2000
STDIN: Final = "-"


@dataclass
class Tally:
    read: int = 0
    valid: int = 0
    published: int = 0
    rejected: int = 0
    shown: list[str] = field(default_factory=list)


class Rejects:
    """Bad rows, one JSON object a line: ``{"line", "problems", "row"}``. Created on the first one."""

    def __init__(self, path: Path, stack: ExitStack) -> None:
        self.path = path
        self._stack = stack
        self._file: IO[str] | None = None

    def write(self, line: int, problems: list[str], row: Any) -> None:
        if self._file is None:
            self._file = self._stack.enter_context(self.path.open("w", encoding="utf-8"))
        record = {"line": line, "problems": problems, "row": row}
        self._file.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")


def _open_input(path: str, stack: ExitStack) -> tuple[io.BufferedReader, CountingReader, int | None]:
    if path == STDIN:
        source: IO[bytes] = sys.stdin.buffer
        total = None
    else:
        file = Path(path)
        if not file.is_file():
            fail(f"no such file: {path}", Exit.USAGE)
        source = stack.enter_context(file.open("rb"))
        total = file.stat().st_size
    counter = CountingReader(source)
    return io.BufferedReader(counter, buffer_size=READ_BUFFER_BYTES), counter, total


def _progress(enabled: bool, total: int | None) -> Progress:
    columns = (TextColumn("importing"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rows]} rows"))
    return Progress(*columns, TimeElapsedColumn(), console=err_console, disable=not enabled, transient=False)


def _valid_requests(
    rows: Iterator[Row], defaults: RowDefaults, seed: str, tally: Tally, rejects: Rejects, tick: Any
) -> Iterator[UnsubscribeRequest]:
    for row in rows:
        tally.read += 1
        if tally.read % PROGRESS_EVERY_ROWS == 0:
            tick()
        problems = [row.problem] if row.problem else None
        if problems is None:
            email = row.fields.get("email")
            rid = import_request_id(seed, row.line, email) if isinstance(email, str) else None
            try:
                request = row_to_request(row.fields, defaults, request_id=rid)
            except InvalidRequestError as exc:
                problems = exc.problems
            else:
                tally.valid += 1
                yield request
                continue
        tally.rejected += 1
        rejects.write(row.line, problems, row.fields or row.raw)
        if len(tally.shown) < SHOWN_REJECTS:
            tally.shown.append(f"line {row.line}: {'; '.join(problems)}")


def _summary(tally: Tally, rejects: Path, dry_run: bool) -> None:
    for line in tally.shown:
        err_console.print(f"[yellow]rejected[/] {line}", highlight=False, soft_wrap=True)
    if tally.rejected > len(tally.shown):
        err_console.print(f"... and {tally.rejected - len(tally.shown)} more", highlight=False)
    verb = "valid (dry run, nothing sent)" if dry_run else "published"
    count = tally.valid if dry_run else tally.published
    console.print(f"{count} {verb}, {tally.rejected} rejected, {tally.read} rows read", highlight=False)
    if tally.rejected:
        console.print(f"rejected rows with line numbers: {rejects}", highlight=False)


def _defaults(settings: Any, scope: Scope | None, connections: list[str] | None, reason: str | None,
              source: Source | None) -> RowDefaults:  # fmt: skip
    defaults = RowDefaults(
        scope=scope,
        connections=tuple(connections or ()),
        reason=reason,
        source=source.value if source else None,
        configured=tuple(c.name for c in settings.enabled_connections),
        known=known_connections(settings),
    )
    unknown = unknown_connections(defaults.connections, defaults.known)
    if unknown:
        names = ", ".join(sorted(defaults.known or ()))
        fail(
            escape(f"--connection {', '.join(unknown)}: not in the configuration (it has {names})"),
            Exit.USAGE,
        )
    return defaults


def import_(
    file: Annotated[str, typer.Argument(help="CSV or JSONL file; '-' reads standard input.")],
    fmt: Annotated[
        Format | None, typer.Option("--format", help="Default: by extension, else sniffed.")
    ] = None,
    scope: Annotated[
        Scope | None,
        typer.Option(
            "--scope", help="For rows without a scope (else: list if the row names lists or a group)."
        ),
    ] = None,
    connection: Annotated[
        list[str] | None,
        typer.Option(
            "--connection",
            help="For rows without connections (repeatable). Must be configured when the configuration "
            "has connections (else exit 2); without configuration names are not checked.",
        ),
    ] = None,
    reason: Annotated[str | None, typer.Option("--reason", help="For rows without a reason.")] = None,
    source: Annotated[Source | None, typer.Option("--source", help="For rows without a source.")] = None,
    rejects_path: Annotated[
        Path | None, typer.Option("--rejects", help="Where bad rows go. Default: FILE.rejects.jsonl.")
    ] = None,
    id_seed: Annotated[
        str | None, typer.Option("--id-seed", help="Seed of generated request ids. Default: the file name.")
    ] = None,
    chunk_size: Annotated[
        int, typer.Option("--chunk-size", min=1, max=MAX_CHUNK_SIZE, help="Requests per task message.")
    ] = DEFAULT_CHUNK_SIZE,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only; send nothing.")] = False,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Default: when stderr is a terminal.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Publish every row of a suppression list; bad rows go to a rejects file with their line numbers.

    Columns (by header): email, request_id, scope, connections (';'-separated), list_ids, group,
    reason, source, customer_key, requested_at. A row naming lists or a group without a scope is
    list-scoped; one that is global and names lists or a group is rejected. With a configuration
    that has connections, rows naming others are rejected (also with --dry-run); without one, names
    are not checked. Exit 0 when all rows were published, 1 when any was rejected, 2 for an
    unusable file or options, 3 when the broker is unreachable.
    """
    settings = settings_or_exit(config)
    defaults = _defaults(settings, scope, connection, reason, source)
    name = "stdin" if file == STDIN else Path(file).name
    rejects = rejects_path or Path(f"{name if file == STDIN else file}.rejects.jsonl")
    tally = Tally()
    with ExitStack() as stack:
        stream, counter, total = _open_input(file, stack)
        rows = read_rows(stream, fmt or detect_format(name, stream.peek(64)))
        producer = None if dry_run else _producer_or_exit(settings, chunk_size, stack)
        bar = stack.enter_context(_progress(sys.stderr.isatty() if progress is None else progress, total))
        task = bar.add_task("import", total=total, rows=0)

        def tick() -> None:
            bar.update(task, completed=counter.bytes_read, rows=tally.read)

        requests = _valid_requests(rows, defaults, id_seed or name, tally, Rejects(rejects, stack), tick)
        try:
            _publish_or_count(producer, requests, tally)
        except FileFormatError as exc:
            fail(str(exc), Exit.USAGE)
        except PublishError as exc:
            _summary(tally, rejects, dry_run)
            fail(f"{exc} (after {tally.published} published)", Exit.UNAVAILABLE)
        tick()
    _summary(tally, rejects, dry_run)
    if tally.rejected:
        raise typer.Exit(int(Exit.FAILED))


def _publish_or_count(
    producer: Producer | None, requests: Iterator[UnsubscribeRequest], tally: Tally
) -> None:
    if producer is None:
        for _ in requests:
            pass
        return
    for chunk in producer.publish_stream(requests):
        tally.published += len(chunk.request_ids)


def _producer_or_exit(settings: Settings, chunk_size: int, stack: ExitStack) -> Producer:
    producer = stack.enter_context(producer_for(settings, chunk_size=chunk_size))
    try:
        producer.ping()
    except PublishError as exc:
        where = mask_url(settings.broker_url)
        fail(f"cannot reach the broker at {where}: {exc.__cause__ or exc}", Exit.UNAVAILABLE)
    return producer

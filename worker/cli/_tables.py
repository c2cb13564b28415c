"""Output that stays readable at any width: 80-column terminals, pipes, CI logs.

Nothing is ever cut to ``whatc…``: :class:`Records` is a table when the table fits the width and one
block per row when it does not (the first column as the block's heading); :class:`Pairs` packs
``label value`` pairs into lines of the width without splitting a pair. Both decide at render time,
from the console they are printed on, so a test can render them into ``Console(width=80)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from worker.pipeline.deadletters import DeadLetter

#: Indent of the lines under a block's heading.
INDENT: Final = "  "
#: Between two pairs on one line.
PAIR_GAP: Final = "   "
#: Wider than any table: measuring at this width gives a table's natural width.
UNBOUNDED_WIDTH: Final = 100_000
#: Longest part of a dead letter's message shown by `dlq list` (`dlq show` has all of it).
DLQ_MESSAGE_CHARS: Final = 300

Cell = str | Text


@dataclass(frozen=True)
class Column:
    header: str
    #: Right-aligned in a table.
    numeric: bool = False


@dataclass
class Records:
    """Rows under named columns: a table if it fits, else one block per row."""

    columns: Sequence[Column]
    rows: Sequence[Sequence[Cell]]
    title: str | None = None

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table()
        natural = Measurement.get(console, options.update_width(UNBOUNDED_WIDTH), table).maximum
        if natural <= options.max_width:
            yield table
            return
        if self.title:
            yield Text(self.title, style="italic")
        for row in self.rows:
            yield Pairs(row[0], [(c.header, cell) for c, cell in zip(self.columns[1:], row[1:], strict=True)])

    def table(self) -> Table:
        table = Table(
            title=self.title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        for column in self.columns:
            table.add_column(column.header, justify="right" if column.numeric else "left", no_wrap=True)
        for row in self.rows:
            table.add_row(*row)
        return table


@dataclass
class Pairs:
    """A heading, then ``label value`` pairs packed into lines of the width (a pair is never split)."""

    heading: Cell
    pairs: Sequence[tuple[str, Cell]]
    #: Lines printed under the pairs, indented and wrapped (never cut).
    notes: Sequence[Cell] = field(default_factory=list)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield _bold(self.heading)
        yield from _packed(self.pairs, options.max_width)
        for note in self.notes:
            text = Text(note) if isinstance(note, str) else note
            yield Padding(text, (0, 0, 0, len(INDENT)), expand=False)


def _bold(cell: Cell) -> Text:
    text = Text(cell) if isinstance(cell, str) else cell.copy()
    text.stylize("bold", 0, len(text.plain.split("\n")[0]))
    return text


def _packed(pairs: Iterable[tuple[str, Cell]], width: int) -> Iterator[Text]:
    line = Text(INDENT)
    for label, value in pairs:
        flat = (
            Text(" ").join(Text(part) for part in str(value).split("\n")) if isinstance(value, str) else value
        )
        piece = Text.assemble((label, "dim"), " " if label else "", flat)
        gap = PAIR_GAP if len(line) > len(INDENT) else ""
        if len(line) + len(gap) + len(piece) > width and len(line) > len(INDENT):
            yield line
            line, gap = Text(INDENT), ""
        line.append_text(Text(gap) + piece)
    if len(line) > len(INDENT):
        yield line


# -- dead letters (`unsub dlq list`) ------------------------------------------------------------------


def dead_letter_blocks(
    letters: Sequence[DeadLetter],
    now: float | None = None,
    *,
    message: Callable[[DeadLetter], str] | None = None,
) -> list[Pairs]:
    """One block per dead letter: its id, then age, connection, reason, masked address, tries, target,
    request and HTTP status, then the start of its message (``message``: how to show it; by default
    redacted, so an address a provider or a message echoed is masked too)."""
    from worker.cli._common import format_age
    from worker.logs import redact_text

    current = time.time() if now is None else now
    shown = message or (lambda d: redact_text(d.message))
    blocks = []
    for d in letters:
        pairs: list[tuple[str, Cell]] = [
            ("dead", f"{format_age(current - d.dead_at)} ago"),
            ("connection", d.connection or "-"),
            ("reason", Text(d.reason, style="yellow")),
            ("address", d.email_masked or "-"),
            ("tries", str(d.attempts)),
        ]
        found = (("target", d.target), ("request", d.request_id))
        pairs += [(label, value) for label, value in found if value]
        if d.status is not None:
            pairs.append(("HTTP", str(d.status)))
        blocks.append(Pairs(d.id, pairs, notes=[shown(d)[:DLQ_MESSAGE_CHARS]]))
    return blocks

"""Streaming readers for `unsub import`: CSV and JSONL rows with their line numbers.

Rows come one at a time from a byte stream, so memory does not grow with the file. Bytes read are
counted (``CountingReader``) so a progress bar needs no line count first. Bad rows (wrong number of
columns, invalid UTF-8, bad JSON) come out as ``Row`` objects with a ``problem`` instead of
stopping the import.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any, Final

from producer.errors import InvalidRequestError
from producer.strictjson import decode_json
from worker.cli._rows import COLUMNS, canonical_column
from worker.errors import FileFormatError as FileFormatError

#: Largest CSV cell accepted (bytes); a runaway quote fails its row instead of eating the file.
MAX_FIELD_BYTES: Final = 64 * 1024
#: Read-ahead buffer of the byte stream.
READ_BUFFER_BYTES: Final = 1024 * 1024


class Format(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


@dataclass(frozen=True)
class Row:
    line: int
    fields: dict[str, Any]
    problem: str | None = None
    #: The row's text when it could not be read as fields (for the rejects file).
    raw: str | None = None


class CountingReader(io.RawIOBase):
    """A raw byte stream that counts what was read from it."""

    def __init__(self, source: IO[bytes]) -> None:
        self._source = source
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        size = len(data)
        buffer[:size] = data
        self.bytes_read += size
        return size


def detect_format(name: str, head: bytes) -> Format:
    """By extension (.csv, .jsonl, .ndjson, .json), else by the first byte (``{`` means JSONL)."""
    lowered = name.lower()
    if lowered.endswith(".csv"):
        return Format.CSV
    if lowered.endswith((".jsonl", ".ndjson", ".json")):
        return Format.JSONL
    return Format.JSONL if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else Format.CSV


def read_rows(stream: io.BufferedReader, fmt: Format) -> Iterator[Row]:
    return _read_csv(stream) if fmt is Format.CSV else _read_jsonl(stream)


def _utf8_problem(values: list[str]) -> str | None:
    for column, value in enumerate(values, start=1):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"column {column}: not valid UTF-8"
    return None


def _header(reader: Any) -> list[str]:
    try:
        header = [canonical_column(name) for name in next(reader)]
    except StopIteration:
        raise FileFormatError("the file is empty: expected a header row naming the columns") from None
    except csv.Error as exc:
        raise FileFormatError(f"line 1: unreadable header: {exc}") from None
    unknown = [name for name in header if name not in COLUMNS]
    if unknown or _utf8_problem(header):
        known = ", ".join(sorted(COLUMNS))
        raise FileFormatError(f"unknown column(s) {', '.join(map(repr, unknown))}; known: {known}")
    if "email" not in header:
        raise FileFormatError("the header has no 'email' column")
    if len(set(header)) != len(header):
        raise FileFormatError("a column appears twice in the header")
    return header


def _read_csv(stream: io.BufferedReader) -> Iterator[Row]:
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(MAX_FIELD_BYTES)
    reader = csv.reader(text)
    header = _header(reader)
    width = len(header)
    while True:
        start = reader.line_num + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Row(start, {}, f"unreadable CSV: {exc}")
            continue
        if not values or values == [""]:
            continue
        problem = _utf8_problem(values)
        if problem is None and len(values) != width:
            problem = f"expected {width} columns, found {len(values)}"
        if problem is None:
            yield Row(start, dict(zip(header, values, strict=True)))
        else:
            yield Row(start, {}, problem, raw=",".join(values).encode("utf-8", "replace").decode())


def _read_jsonl(stream: io.BufferedReader) -> Iterator[Row]:
    for line, raw in enumerate(stream, start=1):
        text = raw.removeprefix(b"\xef\xbb\xbf") if line == 1 else raw
        if not text.strip():
            continue
        shown = text.decode("utf-8", "replace").rstrip("\r\n")
        try:
            value = decode_json(text)  # strict: duplicate keys, NaN, lone surrogates are refused
        except InvalidRequestError as exc:
            yield Row(line, {}, "; ".join(p.removeprefix("message: ") for p in exc.problems), raw=shown)
            continue
        if not isinstance(value, dict):
            yield Row(line, {}, f"expected a JSON object, got {type(value).__name__}", raw=shown)
            continue
        yield Row(line, value)

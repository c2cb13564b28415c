"""Helpers for the logging tests: a configured log stream that is undone afterwards, and an
independent decoder that undoes every escape a redacted line could still hide an address in."""

from __future__ import annotations

import html
import io
import json
import logging
import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import unquote

from worker.logs import MULTIPROCESSING_LOGGER, configure_logging

#: Rounds of decoding applied to a redacted line before looking for what it must not contain.
DECODE_ROUNDS = 6


@contextmanager
def configured_logging(level: str = "DEBUG", log_format: str = "json") -> Iterator[io.StringIO]:
    """Logging configured onto a fresh stream; the process-wide fallbacks it sets are restored."""
    pool_logger = logging.getLogger(MULTIPROCESSING_LOGGER)
    saved = (logging.lastResort, pool_logger.handlers, pool_logger.propagate, pool_logger.level)
    stream = io.StringIO()
    configure_logging(level, log_format, stream)
    try:
        yield stream
    finally:
        logging.captureWarnings(False)
        logging.lastResort, pool_logger.handlers, pool_logger.propagate, pool_logger.level = saved


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def decoded(text: str) -> str:
    """``text`` with percent, backslash and HTML escapes undone (repeatedly), NFKC-normalised and
    case-folded: what a reader could recover from it."""
    for _ in range(DECODE_ROUNDS):
        new = html.unescape(unquote(_unbackslash(text)))
        if new == text:
            break
        text = new
    return unicodedata.normalize("NFKC", text).casefold()


def _unbackslash(text: str) -> str:
    text = re.sub(r"(?:\\+x[0-9a-fA-F]{2})+", _bytes_escape, text)
    text = re.sub(r"\\+u([0-9a-fA-F]{4})", lambda m: chr(int(m[1], 16)), text)
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _bytes_escape(match: re.Match[str]) -> str:
    data = bytes(int(h, 16) for h in re.findall(r"x([0-9a-fA-F]{2})", match[0]))
    return data.decode("utf-8", "replace")

"""A logging call that fails is reported in one redacted line, never with the raw record.

The stdlib's ``Handler.handleError`` prints "--- Logging error ---", the traceback, and the
message with its arguments as given: a clear address included. These tests make real logging
calls fail inside the handler that ``configure_logging`` installs and read what reached stderr.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

import worker.logs
from tests.worker.logging_support import configured_logging
from worker.logs import RedactingStreamHandler, get_logger

ADDRESS = "jöhn.döe@exämple.com"
LibraryLogger = Callable[[str], logging.Logger]


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    with configured_logging() as stream:
        yield stream


@pytest.fixture
def library_logger(log_lines: io.StringIO) -> Iterator[LibraryLogger]:
    """Library loggers served by ``configure_logging``'s handler alone: pytest's capture handlers
    on the root logger re-raise logging errors, which would hide what the handler prints."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, RedactingStreamHandler)]
    touched: list[logging.Logger] = []

    def logger(name: str) -> logging.Logger:
        library = logging.getLogger(name)
        touched.append(library)
        library.handlers, library.propagate = handlers, False
        return library

    yield logger
    for library in touched:
        library.handlers, library.propagate = [], True


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_a_bad_format_string_prints_one_redacted_line(
    log_lines: io.StringIO, library_logger: LibraryLogger, capsys: pytest.CaptureFixture[str]
) -> None:
    library_logger("celery.worker").error("task %d failed for %s", "not-a-number", ADDRESS)

    lines = stderr_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("--- Logging error (TypeError: ")
    assert "in logger celery.worker at " in lines[0]
    assert "'j***@exämple.com'" in lines[0]
    assert "döe" not in lines[0]
    assert log_lines.getvalue() == ""


def test_a_soft_time_limit_raised_inside_the_redactor_prints_one_redacted_line(
    log_lines: io.StringIO, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real_mask = worker.logs.mask_addresses
    fired: list[bool] = []

    def soft_limit_fires_once(text: str) -> str:
        if not fired:
            fired.append(True)
            raise SoftTimeLimitExceeded()
        return real_mask(text)

    monkeypatch.setattr(worker.logs, "mask_addresses", soft_limit_fires_once)

    get_logger("worker.tasks").warning("intake failed", email=ADDRESS, payload={"email": f"'{ADDRESS}'"})

    lines = stderr_lines(capsys)
    assert len(lines) == 1
    assert lines[0].startswith("--- Logging error (SoftTimeLimitExceeded: ")
    assert "'email': 'j***@exämple.com'" in lines[0]
    assert "döe" not in lines[0]


def test_a_message_that_cannot_be_redacted_is_not_shown_at_all(
    library_logger: LibraryLogger, capsys: pytest.CaptureFixture[str]
) -> None:
    class Hostile:
        def __str__(self) -> str:
            raise ValueError(f"cannot render {ADDRESS}")

    library_logger("kombu").error(Hostile())

    lines = stderr_lines(capsys)
    assert lines == ["--- Logging error in logger kombu; its message could not be redacted: not shown"]


def test_nothing_is_printed_when_logging_errors_are_switched_off(
    library_logger: LibraryLogger,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)

    library_logger("celery").error("%d", ADDRESS)

    assert capsys.readouterr().err == ""


def test_the_logging_call_itself_does_not_raise(
    log_lines: io.StringIO, library_logger: LibraryLogger
) -> None:
    arguments: tuple[Any, ...] = ("x", ADDRESS)

    library_logger("httpx").error("%d %d %d", *arguments)

    assert log_lines.getvalue() == ""

"""Logging: structlog for our own events, the same pipeline for Celery's, httpx's and everyone's.

Every event passes :func:`redact` last before rendering, so no token, password, API key, URL
credential or WhatCounts ``p=`` parameter reaches a log, and email addresses appear masked
(``j***@example.com``) in any quoting, escaping or script (:func:`producer.masking.mask_addresses`).
Secret names match as words or as the last part of a key (``db_password``), never inside a word
(``'group': 'newsletter'`` stays). The redacting handler serves the root logger, billiard's pool
logger (which does not propagate), the last-resort handler and Python warnings; when a logging call
itself fails, it prints one redacted line instead of the stdlib's dump of the raw record.
JSON in production (``log_format=json``, or ``auto`` when stderr is not a terminal), readable
columns on a terminal. ``request_id``, ``connection`` and ``task_id`` are bound with
:func:`structlog.contextvars.bound_contextvars` and appear on every line inside that block.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any, Final

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from producer.masking import mask_addresses, mask_email
from worker.config_sources import SECRET_FIELDS

__all__ = [
    "REDACTED",
    "SECRET_KEYS",
    "RedactingStreamHandler",
    "bind",
    "configure_logging",
    "get_logger",
    "is_secret_key",
    "mask_email",
    "redact",
    "redact_mapping",
    "redact_text",
    "redact_value",
    "register_secret",
    "register_secrets",
]

REDACTED: Final = "[REDACTED]"

#: Keys whose values are always secret, wherever they appear in an event (compared in lower case):
#: every secret field of the settings, plus the headers and parameters providers use for credentials.
SECRET_KEYS: Final = SECRET_FIELDS | frozenset(
    {
        "access_token",
        "apikey",
        "authorization",
        "cookie",
        "id_token",
        "jwt",
        "p",
        "proxy-authorization",
        "pwd",
        "secret",
        "set-cookie",
        "x-api-key",
        "x-request-token",
    }
)
#: Keys ending in one of these words (after ``_`` or ``-``) are secret too: ``db_password``, ``x-auth-token``.
_SECRET_KEY_SUFFIX: Final = re.compile(
    r"(?:^|[_-])(?:token|secret|password|passwd|pwd|api[_-]?key|authorization|cookie)$", re.IGNORECASE
)
#: Nesting deeper than this is not walked (nor shown): hostile payloads nest hundreds of levels.
MAX_REDACT_DEPTH: Final = 32
#: What a value nested deeper than ``MAX_REDACT_DEPTH`` becomes.
TOO_DEEP: Final = "[nested too deep]"

# Names of secret parameters in free text (not secrets themselves). A name matches as a whole
# word or as the last ``_``/``-`` part of a key (``flower_password``), never inside a word, so
# ``'group': 'newsletter'``, ``step=3`` and ``http://`` are not taken for ``p``.
_SECRET_NAMES: Final = "|".join(
    (
        *("access_token", "refresh_token", "id_token", "token", "jwt", "api[_-]?key", "client_secret"),
        *("secret", "password", "passwd", "pwd", "p", "authorization"),
    )
)
_KEYED_SECRET: Final = re.compile(
    # key, its closing quote if any (also JSON-in-JSON \"), then ':' '=' or '=>'
    rf"(?<![^\W_])(?P<key>(?:{_SECRET_NAMES}))(?P<kq>\\*[\"']?)(?P<sep>\s*(?:=>|[:=])\s*)(?!\[REDACTED\])"
    # the value: quoted (to the closing quote, else the end of the line) or bare (to a delimiter)
    r"(?:(?P<q>[\"'])(?:(?!(?P=q))[^\\\n]|\\.)*(?:(?P=q)|(?=\n)|\Z)"
    r"|(?P<eq>\\+[\"'])(?:(?!(?P=eq))[^\n])*(?:(?P=eq)|(?=\n)|\Z)"
    r"|(?:(?:Bearer|Basic|Digest|Token)\s+)?[^\s\"'&,;<>()\[\]{}]+)",
    re.IGNORECASE,
)
#: ``scheme://user:password@host``: the password goes, the user stays (and is masked if an address).
_URL_CREDENTIALS: Final = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/?#'\"<>]*):(?!\[REDACTED\])[^\s/?#'\"<>]+@"
)
_Replacement = str | Callable[[re.Match[str]], str]


def _redacted_value(match: re.Match[str]) -> str:
    quote = match["q"] or match["eq"] or ""
    return f"{match['key']}{match['kq']}{match['sep']}{quote}{REDACTED}{quote}"


#: (words the lower-cased text must contain one of, pattern, replacement): the words are a cheap
#: test that skips the pattern on most lines.
_PATTERNS: Final[tuple[tuple[tuple[str, ...], re.Pattern[str], _Replacement], ...]] = (
    (("://",), _URL_CREDENTIALS, rf"\g<head>:{REDACTED}@"),
    ((":", "="), _KEYED_SECRET, _redacted_value),
    # Authorization values wherever they appear, when credential-shaped (a digit, camelCase,
    # base64 padding, or dotted like a JWT), so "basic setup" and "bearer token" stay readable.
    (
        ("bearer", "basic", "digest"),
        re.compile(
            r"\b(Bearer|Basic|Digest)\s+(?!\[REDACTED)"
            r"(?=[\w.~+/=-]*?(?:\d|(?-i:[a-z][A-Z])|[+/=]|\w\.\w))[\w.~+/=-]{4,}",
            re.IGNORECASE,
        ),
        rf"\1 {REDACTED}",
    ),
    # "Token" (a scheme some APIs use) only capitalised and followed by something with a digit.
    (
        ("token",),
        re.compile(r"\b(Token)\s+(?!\[REDACTED)(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{12,}"),
        rf"\1 {REDACTED}",
    ),
    # Any JWT.
    (("eyj",), re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
)
#: Values shorter than this are not registered as known secrets (they would mask ordinary words).
MIN_KNOWN_SECRET_LENGTH: Final = 6

_known_secrets: set[str] = set()
_known_lock = threading.Lock()
_known_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears from now on (settings secrets, issued tokens)."""
    global _known_pattern
    if not value or len(value) < MIN_KNOWN_SECRET_LENGTH or value in _known_secrets:
        return
    with _known_lock:
        _known_secrets.add(value)
        ordered = sorted(_known_secrets, key=len, reverse=True)
        _known_pattern = re.compile("|".join(re.escape(s) for s in ordered))


def register_secrets(values: Iterable[str | None]) -> None:
    for value in values:
        register_secret(value)


def redact_text(text: str) -> str:
    """Remove secrets and mask email addresses (any quoting, escaping or script) in free text."""
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    lowered = text.lower()
    for words, regex, replacement in _PATTERNS:
        if any(word in lowered for word in words):
            text = regex.sub(replacement, text)
    return mask_addresses(text)


def is_secret_key(key: str) -> bool:
    """Whether values under this key are secret: a known name, or one ending in ``_token``, ..."""
    return key.lower() in SECRET_KEYS or _SECRET_KEY_SUFFIX.search(key) is not None


def redact_value(value: Any, key: str | None = None, depth: int = 0) -> Any:
    """Redact one value of an event, recursively; ``key`` is the name it was found under."""
    if key is not None and is_secret_key(key) and not _harmless(value):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_REDACT_DEPTH:
        return TOO_DEEP
    if isinstance(value, dict):
        return {_redact_key(k): redact_value(v, str(k), depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, None, depth + 1) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    return redact_text(str(value))


def _harmless(value: Any) -> bool:
    return value is None or isinstance(value, bool) or value in ("", REDACTED)


def _redact_key(key: Any) -> Any:
    return redact_text(key) if isinstance(key, str) else key


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last step before rendering, for every event."""
    for key in list(event_dict):
        if key.startswith("_"):
            continue  # structlog's own bookkeeping (_record, _from_structlog)
        event_dict[key] = redact_value(event_dict[key], key)
    return event_dict


class RedactingStreamHandler(logging.StreamHandler[Any]):
    """A stream handler whose report of a failed logging call (a bad format string, an exception
    raised while formatting) is one redacted line, not the stdlib's dump of the raw message and
    arguments."""

    def handleError(self, record: logging.LogRecord) -> None:
        stderr = sys.stderr
        if not logging.raiseExceptions or stderr is None:
            return
        try:
            line = _logging_error_line(record, sys.exc_info()[1])
        except Exception:
            line = f"--- Logging error in logger {record.name}; its message could not be redacted: not shown"
        with contextlib.suppress(Exception):
            stderr.write(line + "\n")


def _logging_error_line(record: logging.LogRecord, error: BaseException | None) -> str:
    """One line saying which logging call failed and why, with its message and arguments redacted."""
    problem = f"{type(error).__name__}: {redact_text(str(error))!r}" if error else "unknown error"
    return (
        f"--- Logging error ({problem}) in logger {record.name} at {record.pathname}:{record.lineno}: "
        f"message={redact_value(record.msg)!r} arguments={redact_value(record.args)!r}"
    )


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _renderer(log_format: str, stream: Any) -> Processor:
    use_json = log_format == "json" or (
        log_format == "auto" and not getattr(stream, "isatty", lambda: False)()
    )
    if use_json:
        return structlog.processors.JSONRenderer(sort_keys=False)
    return structlog.dev.ConsoleRenderer(colors=getattr(stream, "isatty", lambda: False)())


#: Chatty libraries kept at WARNING: httpx logs every request URL at INFO.
_QUIET_LOGGERS: Final = ("httpx", "httpcore", "urllib3", "asyncio", "tornado.access", "kombu.pidbox")
#: billiard's logger (the pool's): it does not propagate, so it gets the redacting handler itself.
MULTIPROCESSING_LOGGER: Final = "multiprocessing"


def configure_logging(level: str = "INFO", log_format: str = "auto", stream: Any = None) -> None:
    """Route structlog and the standard library through one redacting formatter: the root logger,
    billiard's own logger, the last-resort handler of loggers without handlers, and warnings."""
    stream = stream or sys.stderr
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = _formatter(log_format, stream)
    _install(_handler(stream, formatter, logging.NOTSET), level)
    logging.lastResort = _handler(stream, formatter, logging.WARNING)
    logging.captureWarnings(False)  # re-applied on every call: a test harness may have reset it
    logging.captureWarnings(True)


def _formatter(log_format: str, stream: Any) -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            _renderer(log_format, stream),
        ],
    )


def _install(handler: logging.Handler, level: str) -> None:
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    quiet_level = max(logging.WARNING, logging.getLevelName(level))
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(quiet_level)
    pool_logger = logging.getLogger(MULTIPROCESSING_LOGGER)
    pool_logger.handlers, pool_logger.propagate = [handler], False
    pool_logger.setLevel(quiet_level)


def _handler(stream: Any, formatter: logging.Formatter, level: int) -> RedactingStreamHandler:
    handler = RedactingStreamHandler(stream)
    handler.setFormatter(formatter)
    handler.setLevel(level)
    return handler


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def bind(**values: Any) -> Any:
    """Context manager binding values (``request_id``, ``connection``, ...) to every line inside it."""
    return structlog.contextvars.bound_contextvars(**values)


def redact_mapping(values: MutableMapping[str, Any]) -> dict[str, Any]:
    """A redacted copy of a mapping (for showing configuration, provider responses, ...)."""
    return {k: redact_value(v, k) for k, v in values.items()}

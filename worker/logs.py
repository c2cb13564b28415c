"""Logging: structlog for our own events, the same pipeline for Celery's, httpx's and everyone's.

Every event passes :func:`redact` last before rendering, so no token, password, API key or
WhatCounts ``p=`` parameter reaches a log, and email addresses appear masked (``j***@example.com``).
JSON in production (``log_format=json``, or ``auto`` when stderr is not a terminal), readable
columns on a terminal. ``request_id``, ``connection`` and ``task_id`` are bound with
:func:`structlog.contextvars.bound_contextvars` and appear on every line inside that block.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, Final

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

REDACTED: Final = "[REDACTED]"

#: Keys whose values are always secret, wherever they appear in an event (compared in lower case).
SECRET_KEYS: Final = frozenset(
    {
        "access_token",
        "api_key",
        "apikey",
        "authorization",
        "client_secret",
        "cookie",
        "flower_password",
        "id_token",
        "jwt",
        "p",
        "password",
        "proxy-authorization",
        "pwd",
        "refresh_token",
        "secret",
        "set-cookie",
        "token",
        "x-api-key",
        "x-request-token",
    }
)

# Names of secret parameters (not secrets themselves).
_SECRET_PARAM_NAMES: Final = "|".join(
    [
        *("p", "pwd", "password", "passwd", "token", "access_token", "refresh_token", "id_token"),
        *("api_key", "apikey", "client_secret", "secret", "x-api-key", "x-request-token"),
    ]
)
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # Query strings and form bodies: ?p=secret&r=realm, pwd=..., access_token=...
    (re.compile(rf"(?<![\w.-])((?:{_SECRET_PARAM_NAMES})=)[^&\s#'\"]+", re.IGNORECASE), rf"\1{REDACTED}"),
    # "password": "x", 'token': 'x', x-api-key: x (JSON, dict reprs, header dumps)
    (
        re.compile(
            rf"([\"']?(?:{_SECRET_PARAM_NAMES}|authorization)[\"']?\s*[:]\s*[\"']?)"
            r"(?!\[REDACTED)(?:Bearer |Basic |Token )?[^\"',\s}\]]+",
            re.IGNORECASE,
        ),
        rf"\1{REDACTED}",
    ),
    # Authorization header values wherever they appear. "Token" (a scheme some APIs use) only when
    # capitalised and followed by something credential-shaped, so "token refreshed" stays readable.
    (
        re.compile(r"\b(Bearer|Basic)\s+(?!\[REDACTED)[A-Za-z0-9._~+/=-]{4,}", re.IGNORECASE),
        rf"\1 {REDACTED}",
    ),
    (
        re.compile(r"\b(Token)\s+(?!\[REDACTED)(?=[A-Za-z._~+/=-]*\d)[A-Za-z0-9._~+/=-]{12,}"),
        rf"\1 {REDACTED}",
    ),
    # Any JWT.
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
)
_EMAIL: Final = re.compile(
    # Local parts use the common characters only, so that '^', '&' and '=' around an address
    # (WhatCounts caret data, query strings) are kept and only the address itself is masked.
    r"(?<![\w.%+'-])([A-Za-z0-9])[A-Za-z0-9._%+'-]*@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})"
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


def mask_email(address: str) -> str:
    """``jane.doe@example.com`` → ``j***@example.com``; not an address → masked whole."""
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return "***"
    return f"{local[0]}***@{domain}"


def redact_text(text: str) -> str:
    """Remove secrets and mask email addresses in free text."""
    pattern = _known_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for regex, replacement in _PATTERNS:
        text = regex.sub(replacement, text)
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", text)


def redact_value(value: Any, key: str | None = None) -> Any:
    """Redact one value of an event, recursively; ``key`` is the name it was found under."""
    if key is not None and key.lower() in SECRET_KEYS and value not in (None, "", REDACTED):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


def redact(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the last step before rendering, for every event."""
    for key in list(event_dict):
        if key.startswith("_"):
            continue  # structlog's own bookkeeping (_record, _from_structlog)
        event_dict[key] = redact_value(event_dict[key], key)
    return event_dict


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


def configure_logging(level: str = "INFO", log_format: str = "auto", stream: Any = None) -> None:
    """Route structlog and the standard library through one redacting formatter."""
    stream = stream or sys.stderr
    shared = _shared_processors()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact,
            _renderer(log_format, stream),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger


def bind(**values: Any) -> Any:
    """Context manager binding values (``request_id``, ``connection``, ...) to every line inside it."""
    return structlog.contextvars.bound_contextvars(**values)


def redact_mapping(values: MutableMapping[str, Any]) -> dict[str, Any]:
    """A redacted copy of a mapping (for showing configuration, provider responses, ...)."""
    return {k: redact_value(v, k) for k, v in values.items()}

"""Configuration problems, one line each: where (field, variable, or file line and column) and what is
wrong, never the value (it may be a secret)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import ValidationError
from pydantic_settings import SettingsError

#: pydantic-settings names the field and the source in its message (the cause holds the JSON error).
_SETTINGS_ERROR: Final = re.compile(r'field "(?P<field>\w+)" from source "(?P<source>\w+)"')
#: pydantic's prefix for errors our validators raise as ValueError.
_VALUE_ERROR_PREFIX: Final = "Value error, "
#: Where tomllib puts the position in its message.
_TOML_POSITION: Final = re.compile(r"\s*\(at (?P<where>line \d+, column \d+|end of document)\)$")


def file_problem(path: Path, exc: Exception) -> str:
    """``config file X: not valid YAML at line 3, column 7: <what>`` for a file that does not parse."""
    kind = {".json": "JSON", ".toml": "TOML"}.get(path.suffix, "YAML")
    where, what = _position(exc)
    return f"config file {path}: not valid {kind}{f' at {where}' if where else ''}: {what}"


def _position(exc: Exception) -> tuple[str | None, str]:
    if isinstance(exc, json.JSONDecodeError):
        return f"line {exc.lineno}, column {exc.colno}", exc.msg
    if isinstance(exc, yaml.MarkedYAMLError):
        # Only the problem and its mark: str(exc) quotes the offending line, which may hold a secret.
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else None
        return where, " ".join(filter(None, [exc.context, exc.problem])) or type(exc).__name__
    if isinstance(exc, tomllib.TOMLDecodeError):
        text = str(exc)
        found = _TOML_POSITION.search(text)
        return (found["where"], text[: found.start()]) if found else (None, text)
    return None, type(exc).__name__


def env_problem(exc: SettingsError, prefix: str) -> str:
    """``UNSUB_CONNECTIONS: not valid JSON at line 1, column 15: <what>`` for an unreadable variable."""
    found = _SETTINGS_ERROR.search(str(exc))
    where = f"{prefix}{found['field'].upper()}" if found else "environment"
    cause = exc.__cause__
    if isinstance(cause, json.JSONDecodeError):
        return f"{where}: not valid JSON at line {cause.lineno}, column {cause.colno}: {cause.msg}"
    return f"{where}: cannot be read ({type(cause).__name__ if cause else exc})"


def validation_problems(
    exc: ValidationError, raw_connections: list[Any], provider_tags: Collection[str]
) -> list[str]:
    """One ``field.path: message`` line per problem, never echoing a value.

    Connections are named by their ``name`` (``connections[wc-main].realm``) rather than by index.
    """
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in error["loc"]]
        message = error["msg"].removeprefix(_VALUE_ERROR_PREFIX)
        if error["type"] in {"union_tag_invalid", "union_tag_not_found"}:
            loc.append("type")
            message = f"must be one of {', '.join(provider_tags)}"
        if len(loc) >= 2 and loc[0] == "connections" and loc[1].isdigit():
            index = int(loc[1])
            entry = raw_connections[index] if index < len(raw_connections) else {}
            name = entry.get("name") if isinstance(entry, Mapping) else None
            rest = [part for part in loc[2:3] if part not in provider_tags] + loc[3:]
            loc = [f"connections[{name or f'#{index}'}]", *rest]
        problems.append(f"{'.'.join(loc) or 'settings'}: {message}")
    return problems

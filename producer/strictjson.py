"""TEMPORARY stand-in for helper A's producer/strictjson.py (same signature)."""

from __future__ import annotations

import json
from typing import Any, Final

from producer.errors import InvalidRequestError

DEFAULT_MAX_DEPTH: Final = 32


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise InvalidRequestError([f"message: duplicate key {key[:40]!r}"])
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise InvalidRequestError([f"message: {name} is not JSON"])


def _depth(value: Any, limit: int) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                raise InvalidRequestError([f"message: nested deeper than {limit} levels"])
            children = item.values() if isinstance(item, dict) else item
            stack.extend((c, depth + 1) for c in children)


def decode_json(
    data: bytes | str, *, max_depth: int = DEFAULT_MAX_DEPTH, max_bytes: int | None = None
) -> Any:
    if max_bytes is not None and len(data) > max_bytes:
        raise InvalidRequestError([f"message: larger than {max_bytes} bytes"])
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequestError([f"message: not UTF-8 (byte {exc.start})"]) from None
    try:
        value = json.loads(data, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidRequestError([f"message: nested deeper than {max_depth} levels"]) from None
    except ValueError as exc:
        raise InvalidRequestError([f"message: not valid JSON ({str(exc).split(':')[0]})"]) from None
    _depth(value, max_depth)
    return value

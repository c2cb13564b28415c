"""Per address: the requests seen for it and its de-duplication windows, in one hash.

``unsub:addr:<sha256 of the address>`` (the address itself is never a key name) holds a field
``r:<request id>`` per request (when it was taken in) and a field ``w:<connection>|<target>`` per
delivery inside the de-duplication window (``<request id> <epoch seconds>``). It is written with the
request's status in the intake transaction and kept ``status_retention_s`` after the last request.
A window is open while its time is less than ``dedupe_window_s`` old; a dead delivery closes it, so a
later request for the same address is not kept out by a failure.
"""

from __future__ import annotations

from typing import Any, Final

import redis

from worker import keys
from worker.redis_client import text, text_list

REQUEST_PREFIX: Final = "r:"
WINDOW_PREFIX: Final = "w:"


def window_field(connection: str, target: str) -> str:
    return f"{WINDOW_PREFIX}{connection}|{target}"


def window_value(request_id: str, at: float) -> str:
    return f"{request_id} {at:.3f}"


def open_holder(value: str | None, now: float, window_s: float) -> str | None:
    """The request id holding a window that is still open, else None."""
    if not value or window_s <= 0:
        return None
    request_id, _, at = value.rpartition(" ")
    try:
        opened = float(at)
    except ValueError:
        return None
    return request_id if now - opened < window_s else None


def queue_windows(pipe: Any, email: str, fields: list[str]) -> None:
    """Queue an HMGET of the address's windows (one reply: a list aligned with ``fields``)."""
    pipe.hmget(keys.address(email), fields)


def write(
    pipe: Any, email: str, request_id: str, at: float, windows: dict[str, str], retention_s: float
) -> None:
    key = keys.address(email)
    pipe.hset(key, mapping={f"{REQUEST_PREFIX}{request_id}": f"{at:.3f}", **windows})
    pipe.expire(key, int(retention_s))


def close_window(pipe: Any, email: str, connection: str, target: str) -> None:
    pipe.hdel(keys.address(email), window_field(connection, target))


def request_ids(client: redis.Redis, email: str) -> list[str]:
    """Every request id seen for the address (also from the set kept by earlier versions)."""
    fields = text_list(client.hkeys(keys.address(email)))
    found = {f[len(REQUEST_PREFIX) :] for f in fields if f.startswith(REQUEST_PREFIX)}
    found |= {text(v) for v in text_list(client.smembers(keys.email_index(email)))}
    return sorted(found)

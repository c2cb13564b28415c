"""Lua scripts registered once per client, never sent as text on each call.

``script(client, SOURCE)(keys=[...], args=[...])`` runs ``SOURCE`` with EVALSHA (redis-py loads it
once if the server does not know it). The registrations live on the client object itself, so they
go when the client goes.
"""

from __future__ import annotations

import threading
from typing import Any, Final

import redis

#: Attribute of a client that holds its registered scripts (source → redis-py ``Script``).
_ATTRIBUTE: Final = "_unsub_scripts"
_lock = threading.Lock()


def script(client: redis.Redis, source: str) -> Any:
    """The registered script ``source`` of ``client`` (a redis-py ``Script``)."""
    known: dict[str, Any] | None = getattr(client, _ATTRIBUTE, None)
    if known is None:
        with _lock:
            known = getattr(client, _ATTRIBUTE, None)
            if known is None:
                known = {}
                setattr(client, _ATTRIBUTE, known)
    found = known.get(source)
    if found is None:
        found = known.setdefault(source, client.register_script(source))
    return found

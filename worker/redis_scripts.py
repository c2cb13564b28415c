"""Lua scripts registered once per client, never sent as text on each call.

``script(client, SOURCE)(keys=[...], args=[...])`` runs ``SOURCE`` with EVALSHA (redis-py loads it
once if the server does not know it). Registration is remembered per client object, weakly: a
client that is gone takes its scripts with it.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import redis

_registered: weakref.WeakKeyDictionary[redis.Redis, dict[str, Any]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def script(client: redis.Redis, source: str) -> Any:
    """The registered script ``source`` of ``client`` (a redis-py ``Script``)."""
    with _lock:
        known = _registered.setdefault(client, {})
        found = known.get(source)
        if found is None:
            found = known[source] = client.register_script(source)
        return found

"""Redis clients for the state store, one pool per process and URL.

A ``sentinel://`` URL gives a client of the primary the Sentinels name
(:func:`producer.connect.redis_client`): it asks them again whenever it reconnects, so the workers,
the scheduler, the CLI and the metrics exporter follow a failover without a restart.
"""

from __future__ import annotations

import os
import threading
from typing import Final

import redis

from producer.connect import is_sentinel_url, redis_client

#: Network timeouts for state-store calls; a Redis that stops answering must not hang a worker.
SOCKET_TIMEOUT_S: Final = 10.0
CONNECT_TIMEOUT_S: Final = 5.0
HEALTH_CHECK_INTERVAL_S: Final = 15

_clients: dict[tuple[int, str, str | None], redis.Redis] = {}
_lock = threading.Lock()


def redis_for(
    url: str, *, sentinel_master: str | None = None, sentinel_password: str | None = None
) -> redis.Redis:
    """A client for ``url``, shared within this process (re-created after a fork).

    For a ``sentinel://`` URL without ``sentinel_master``, the process's settings name the master
    (and the Sentinels' password).
    """
    if sentinel_master is None and is_sentinel_url(url):
        from worker.settings import get_settings

        options = get_settings().sentinel
        sentinel_master, sentinel_password = options["sentinel_master"], options["sentinel_password"]
    key = (os.getpid(), url, sentinel_master)
    client = _clients.get(key)
    if client is None:
        with _lock:
            client = _clients.get(key)
            if client is None:
                client = _new_client(url, sentinel_master, sentinel_password)
                _clients[key] = client
    return client


def _new_client(url: str, sentinel_master: str | None, sentinel_password: str | None) -> redis.Redis:
    return redis_client(
        url,
        # Bytes that are not UTF-8 (a hostile publisher's) come back as lone surrogates instead of
        # failing the whole reply, and are written back unchanged.
        encoding_errors="surrogateescape",
        socket_timeout_s=SOCKET_TIMEOUT_S,
        connect_timeout_s=CONNECT_TIMEOUT_S,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
        retry_on_timeout=True,
        sentinel_master=sentinel_master,
        sentinel_password=sentinel_password,
    )


def forget_clients() -> None:
    """Drop every cached client (after a fork, or in tests)."""
    with _lock:
        _clients.clear()


# ---------------------------------------------------------------------------------------------
# Typed views of replies. Clients here use decode_responses=True, so replies are text; redis-py's
# annotations still say ``bytes | str``. These helpers narrow them in one place.

StreamEntry = tuple[str, dict[str, str]]


def text(value: object) -> str:
    """A reply value as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_map(reply: object) -> dict[str, str]:
    """A hash reply (HGETALL) as a str → str mapping."""
    return {text(k): text(v) for k, v in dict(reply).items()} if reply else {}  # type: ignore[call-overload]


def text_list(reply: object) -> list[str]:
    return [text(v) for v in reply] if reply else []  # type: ignore[attr-defined]


def stream_entries(reply: object) -> list[StreamEntry]:
    """XRANGE / XCLAIM entries as (id, fields); entries Redis 6.2 reports as deleted are skipped."""
    entries: list[StreamEntry] = []
    for item in reply or []:  # type: ignore[attr-defined]
        entry_id, fields = item
        if entry_id is not None:
            entries.append((text(entry_id), text_map(fields)))
    return entries


def read_group_entries(reply: object) -> list[StreamEntry]:
    """An XREADGROUP reply (one stream or several) flattened to its entries."""
    entries: list[StreamEntry] = []
    for _stream, messages in reply or []:  # type: ignore[attr-defined]
        entries.extend(stream_entries(messages))
    return entries

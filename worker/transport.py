"""The Redis broker transport, with one kombu race made harmless.

When the broker connection drops, Celery closes the old connection before reconnecting. kombu's
Redis channel disconnects its pool first and then, while closing, tries to give this worker's
unacknowledged messages back, which needs a new pool for a connection that is already gone:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` escapes Celery's error handling
and the worker exits with "Unrecoverable error" instead of reconnecting (kombu issue #582, seen in
the Redis-restart reliability test). Nothing is lost either way (the messages stay in kombu's
unacked hash and come back after the visibility timeout), so this channel lets that close finish
quietly and Celery reconnects.

The Sentinel transport (``sentinel://`` broker URLs, :data:`SENTINEL_TRANSPORT`) closes its channels
the same way: it is kombu's Sentinel channel, which asks the Sentinels for the primary on every
(re)connection, with this fix.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from kombu import serialization
from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from producer.connect import is_sentinel_url
from worker.logs import get_logger

log = get_logger(__name__)

#: ``broker_transport`` value that selects this transport.
TRANSPORT: str = f"{__name__}:Transport"
#: ``broker_transport`` value for a ``sentinel://`` broker URL.
SENTINEL_TRANSPORT: str = f"{__name__}:SentinelTransport"
#: Deepest JSON a Celery message (ours are a few levels) may nest. Deeper ones are refused as
#: undecodable (Celery logs and drops them) instead of crashing the worker's main process, which
#: would fail to pickle them for its pool (RecursionError) and exit.
MAX_MESSAGE_DEPTH: Final = 64


def bounded_loads(data: Any) -> Any:
    """kombu's JSON decoding, refusing nesting deeper than :data:`MAX_MESSAGE_DEPTH`."""
    try:
        value = kombu_json.loads(data)  # type: ignore[no-untyped-call]
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_MESSAGE_DEPTH} levels") from None
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_MESSAGE_DEPTH:
                raise ValueError(f"JSON nested deeper than {MAX_MESSAGE_DEPTH} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return value


def register_bounded_json() -> None:
    """Make the ``json`` serializer of this process decode with :func:`bounded_loads`."""
    serialization.register(  # type: ignore[no-untyped-call]
        "json", kombu_json.dumps, bounded_loads, content_type="application/json", content_encoding="utf-8"
    )


def transport_for(broker_url: str) -> str:
    """The ``broker_transport`` for ``broker_url``: Sentinel's for ``sentinel://``, else plain Redis."""
    return SENTINEL_TRANSPORT if is_sentinel_url(broker_url) else TRANSPORT


def _close_quietly(channel: kombu_redis.Channel, close: Callable[[], None]) -> None:
    try:
        close()
    except AttributeError:
        if getattr(channel.connection, "client", None) is not None:
            raise  # not the race: a real bug must show
        log.warning(
            "broker connection already gone while closing a channel; unacknowledged messages "
            "come back after the visibility timeout"
        )


class Channel(kombu_redis.Channel):
    def close(self) -> None:
        _close_quietly(self, super().close)


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):
    def close(self) -> None:
        _close_quietly(self, super().close)


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel

"""The Redis broker transport, with one kombu race made harmless.

When the broker connection drops, Celery closes the old connection before reconnecting. kombu's
Redis channel disconnects its pool first and then, while closing, tries to give this worker's
unacknowledged messages back, which needs a new pool for a connection that is already gone:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` escapes Celery's error handling
and the worker exits with "Unrecoverable error" instead of reconnecting (kombu issue #582, seen in
the Redis-restart reliability test). Nothing is lost either way (the messages stay in kombu's
unacked hash and come back after the visibility timeout), so this channel lets that close finish
quietly and Celery reconnects.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis

from worker.logs import get_logger

log = get_logger(__name__)

#: ``broker_transport`` value that selects this transport.
TRANSPORT: str = f"{__name__}:Transport"


class Channel(kombu_redis.Channel):
    def close(self) -> None:
        try:
            super().close()  # type: ignore[no-untyped-call]
        except AttributeError:
            if getattr(self.connection, "client", None) is not None:
                raise  # not the race: a real bug must show
            log.warning(
                "broker connection already gone while closing a channel; unacknowledged messages "
                "come back after the visibility timeout"
            )


class Transport(kombu_redis.Transport):
    Channel = Channel

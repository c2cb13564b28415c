"""The producer library's real publisher: intake task messages sent by name through a Celery client.

It needs no worker code: a minimal Celery app (no tasks registered) builds standard task messages
for ``unsub.intake`` and publishes them to the intake queue through kombu's connection pool, retrying
on broker errors with kombu's retry policy. Redis has no publisher confirms; a message counts as sent
once Redis answered the ``LPUSH``.

    with Producer(broker_url="redis://localhost:6379/0") as producer:
        request_id = producer.publish({"email": "jane@example.com", "reason": "preference centre"})
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, TypedDict

from celery import Celery
from kombu.entity import Queue
from kombu.exceptions import KombuError, OperationalError

from producer import names
from producer.base import DEFAULT_CHUNK_SIZE, BasePublisher, TaskPayload
from producer.errors import PublishError


class RetryPolicy(TypedDict, total=False):
    """kombu's publish retry policy (seconds)."""

    max_retries: int
    interval_start: float
    interval_step: float
    interval_max: float


#: Up to 5 retries, waiting 0, 0.5, 1, 1.5, 2 s: a broker restart is ridden out, a dead one fails in ~5 s.
DEFAULT_RETRY_POLICY: Final[RetryPolicy] = {
    "max_retries": 5,
    "interval_start": 0.0,
    "interval_step": 0.5,
    "interval_max": 2.0,
}
#: Broker connections kept open for reuse across threads.
DEFAULT_POOL_LIMIT: Final = 10
#: Longest wait for a TCP connection to the broker.
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
#: Longest wait for the broker to answer on an open connection.
DEFAULT_SOCKET_TIMEOUT_S: Final = 30.0


def _client_app(broker_url: str, pool_limit: int, connect_timeout_s: float) -> Celery:
    app = Celery("unsub-producer", broker=broker_url, set_as_current=False)
    app.conf.update(
        broker_pool_limit=pool_limit,
        broker_connection_timeout=connect_timeout_s,
        broker_transport_options={
            "socket_connect_timeout": connect_timeout_s,
            "socket_timeout": DEFAULT_SOCKET_TIMEOUT_S,
        },
        task_serializer="json",
        accept_content=["json"],
        # Same queue definition as the workers (producer.names), so the routing binding matches.
        task_queues=[Queue(names.INTAKE_QUEUE, routing_key=names.INTAKE_QUEUE)],  # type: ignore[no-untyped-call]
        task_default_queue=names.INTAKE_QUEUE,
        # Flower shows the task as sent, with the masked argsrepr.
        task_send_sent_event=True,
    )
    return app


@contextmanager
def _map_broker_errors(broker: str) -> Iterator[None]:
    """The one place kombu/redis/socket errors become ``PublishError``."""
    try:
        yield
    except (OperationalError, KombuError, OSError) as exc:
        raise PublishError(f"the broker at {broker} did not take the message: {exc}") from exc


def _safe_url(url: str) -> str:
    scheme, _, rest = url.partition("://")
    _, at, host = rest.rpartition("@")
    return f"{scheme}://{'***@' if at else ''}{host}"


class Producer(BasePublisher):
    """Publishes unsubscribe requests to the intake queue of a Celery broker (Redis).

    Parameters:
        broker_url: the workers' broker, e.g. ``redis://:password@redis:6379/0``.
        chunk_size: requests per task message in ``publish_many``/``publish_stream``. Defaults to 500.
        pool_limit: broker connections kept for reuse. Defaults to 10.
        connect_timeout_s: TCP connect timeout in seconds. Defaults to 5.
        retry_policy: kombu publish retry policy. Defaults to :data:`DEFAULT_RETRY_POLICY`.

    Thread-safe: each send borrows a connection from the pool.
    """

    def __init__(
        self,
        broker_url: str,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        pool_limit: int = DEFAULT_POOL_LIMIT,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        super().__init__(chunk_size=chunk_size)
        self._broker = _safe_url(broker_url)
        self._retry_policy: Mapping[str, Any] = dict(retry_policy or DEFAULT_RETRY_POLICY)
        self._app = _client_app(broker_url, pool_limit, connect_timeout_s)

    def _send(self, payload: TaskPayload, argsrepr: str) -> str:
        task_id = str(uuid.uuid4())
        with _map_broker_errors(self._broker):
            self._app.send_task(
                names.INTAKE_TASK,
                args=[payload],
                task_id=task_id,
                queue=names.INTAKE_QUEUE,
                argsrepr=argsrepr,
                kwargsrepr="{}",
                retry=True,
                retry_policy=self._retry_policy,
                add_to_parent=False,
            )
        return task_id

    def ping(self) -> None:
        """Check the broker answers (raises ``PublishError`` if not): a cheap readiness probe."""
        with _map_broker_errors(self._broker), self._app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1)

    def close(self) -> None:
        self._app.close()

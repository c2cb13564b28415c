"""The producer library's real publisher: intake task messages written straight to the Redis broker.

It needs no worker code and no Celery: it writes the standard Celery task message for
``unsub.intake`` (:mod:`producer.envelope`) onto the intake queue with one ``LPUSH``, and retries
on connection errors with :data:`DEFAULT_RETRY_POLICY`.

**When a request counts as accepted.** ``publish`` returning means Redis answered the ``LPUSH``: the
message is in the primary's memory. With ``replicas=N`` (for Redis with replicas and automatic
failover, e.g. Sentinel) it also means ``N`` replicas confirmed it (``WAIT`` on the same connection,
within ``replica_timeout_s``), so the death of the primary right after cannot lose it; if fewer
confirm in time, ``publish`` raises :class:`PublishError` and the caller publishes again (the request
id makes a second copy harmless).

    with Producer(broker_url="redis://localhost:6379/0") as producer:
        request_id = producer.publish({"email": "jane@example.com", "reason": "preference centre"})

With Redis Sentinel, give the Sentinels' URL and the master name; the producer asks the Sentinels for
the primary whenever it reconnects, so it follows a failover without a restart:

    Producer(
        broker_url="sentinel://:pw@s1:26379;sentinel://s2:26379;sentinel://s3:26379/0",
        sentinel_master="unsub",
        replicas=1,
    )
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypedDict, TypeVar

import redis

from producer import names
from producer.base import DEFAULT_CHUNK_SIZE, BasePublisher, TaskPayload
from producer.connect import redis_client, safe_url
from producer.envelope import task_message
from producer.errors import PublishError

T = TypeVar("T")


class RetryPolicy(TypedDict, total=False):
    """How publishing retries when Redis cannot be reached (seconds)."""

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
#: Longest wait for replicas to confirm a message when ``replicas`` is set.
DEFAULT_REPLICA_TIMEOUT_S: Final = 1.0
#: Errors worth another try: the broker away, or (during a failover) a demoted primary's refusal.
_RETRIED: Final = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError, OSError)


class Producer(BasePublisher):
    """Publishes unsubscribe requests to the intake queue of the workers' Redis broker.

    Parameters:
        broker_url: the workers' broker, e.g. ``redis://:password@redis:6379/0``.
        chunk_size: requests per task message in ``publish_many``/``publish_stream``. Defaults to 500.
        pool_limit: broker connections kept for reuse. Defaults to 10.
        connect_timeout_s: TCP connect timeout in seconds. Defaults to 5.
        retry_policy: how connection errors are retried. Defaults to :data:`DEFAULT_RETRY_POLICY`.
        replicas: replicas that must confirm each message before ``publish`` returns (``WAIT``).
            Defaults to 0 (the primary's answer is enough: no failover to survive).
        replica_timeout_s: how long to wait for them, in seconds. Defaults to 1.
        sentinel_master: the master name the Sentinels monitor, required when ``broker_url`` is a
            ``sentinel://`` URL (Celery's form: ``sentinel://host1:26379;sentinel://host2:26379/0``).
        sentinel_password: the Sentinels' own password, if they have one (the data nodes' password
            goes in the URL, as for ``redis://``).

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
        replicas: int = 0,
        replica_timeout_s: float = DEFAULT_REPLICA_TIMEOUT_S,
        sentinel_master: str | None = None,
        sentinel_password: str | None = None,
    ) -> None:
        super().__init__(chunk_size=chunk_size)
        if replicas < 0:
            raise ValueError(f"replicas must be 0 or more, got {replicas}")
        self._broker = safe_url(broker_url)
        self._policy: RetryPolicy = {**DEFAULT_RETRY_POLICY, **(retry_policy or {})}
        self._replicas = replicas
        self._replica_timeout_ms = max(int(replica_timeout_s * 1000), 1)
        self._client = redis_client(
            broker_url,
            max_connections=pool_limit,
            connect_timeout_s=connect_timeout_s,
            socket_timeout_s=DEFAULT_SOCKET_TIMEOUT_S,
            sentinel_master=sentinel_master,
            sentinel_password=sentinel_password,
        )

    def _send(self, payload: TaskPayload, argsrepr: str) -> str:
        task_id = str(uuid.uuid4())
        message = task_message(
            names.INTAKE_TASK, [payload], task_id=task_id, queue=names.INTAKE_QUEUE, argsrepr=argsrepr
        )
        self._retrying(lambda: self._push(message))
        return task_id

    def _push(self, message: str) -> None:
        pipe = self._client.pipeline(transaction=False)  # one connection: WAIT covers the LPUSH
        pipe.lpush(names.INTAKE_QUEUE, message)
        if self._replicas:
            pipe.execute_command("WAIT", self._replicas, self._replica_timeout_ms)  # type: ignore[no-untyped-call]
        replies = pipe.execute()
        if self._replicas and int(replies[-1]) < self._replicas:
            raise PublishError(
                f"the broker at {self._broker} took the message but only {int(replies[-1])} of the "
                f"{self._replicas} replicas asked for confirmed it within {self._replica_timeout_ms} ms: "
                "it could be lost if the primary failed now; publish it again (the request id makes "
                "a second copy harmless)"
            )

    def ping(self) -> None:
        """Check the broker answers (raises ``PublishError`` if not): a cheap readiness probe."""
        self._retrying(lambda: self._client.ping())

    def close(self) -> None:
        self._client.close()

    def _retrying(self, action: Callable[[], T]) -> T:
        waits = _waits(self._policy)
        while True:
            try:
                with _map_broker_errors(self._broker):
                    return action()
            except PublishError as exc:
                if not isinstance(exc.__cause__, _RETRIED):
                    raise
                wait = next(waits, None)
                if wait is None:
                    raise
                time.sleep(wait)


def _waits(policy: RetryPolicy) -> Iterator[float]:
    """The pauses before each retry of ``policy``."""
    start, step = policy.get("interval_start", 0.0), policy.get("interval_step", 0.5)
    most = policy.get("interval_max", 2.0)
    for n in range(policy.get("max_retries", 0)):
        yield min(start + n * step, most)


@contextmanager
def _map_broker_errors(broker: str) -> Iterator[None]:
    """The one place redis/socket errors become ``PublishError``."""
    try:
        yield
    except (redis.RedisError, OSError) as exc:
        raise PublishError(f"the broker at {broker} did not take the message: {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]

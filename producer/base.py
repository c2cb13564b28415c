"""What every publisher shares: validation before sending, chunking, and masked task arguments.

A publisher turns requests (``UnsubscribeRequest`` objects, mappings or JSON text) into intake
task messages. Subclasses only implement ``_send``: the real one talks to the broker
(:class:`producer.client.Producer`), the fake records messages (:class:`producer.memory.MemoryProducer`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from types import TracebackType
from typing import Any, Final, Self

from producer.contract import UnsubscribeRequest, parse_request
from producer.errors import InvalidRequestError
from producer.masking import chunk_argsrepr

#: Requests per intake task message. 500 keeps a message near 150 KB and one intake transaction short.
DEFAULT_CHUNK_SIZE: Final = 500
#: Largest chunk accepted: the worker takes one message's requests in one Redis transaction.
MAX_CHUNK_SIZE: Final = 5000

RequestLike = UnsubscribeRequest | Mapping[str, Any] | str | bytes
#: The intake task's single argument: one request, or a list of them.
TaskPayload = dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class PublishedChunk:
    """One intake task message that the broker accepted."""

    task_id: str
    #: Position of the chunk's first request in the input.
    first_index: int
    request_ids: list[str]


def to_request(request: RequestLike, index: int | None = None) -> UnsubscribeRequest:
    """Validate one request; the error names each bad field and, in a batch, the request's index."""
    if isinstance(request, UnsubscribeRequest):
        return request
    try:
        return parse_request(request)
    except InvalidRequestError as exc:
        raise InvalidRequestError(exc.problems, index=index) from None


def to_payload(request: UnsubscribeRequest) -> dict[str, Any]:
    """The JSON the intake task receives (absent optional fields are left out)."""
    return request.model_dump(mode="json", exclude_none=True)


def check_chunk_size(chunk_size: int) -> int:
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}, got {chunk_size}")
    return chunk_size


class BasePublisher(ABC):
    """Publishes unsubscribe requests to the intake task. Use as a context manager or call ``close``."""

    def __init__(self, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.chunk_size = check_chunk_size(chunk_size)

    def publish(self, request: RequestLike) -> str:
        """Send one request; returns its request id.

        Raises:
            InvalidRequestError: the request breaks the contract (nothing was sent).
            PublishError: the broker did not take the message, even after retries.
        """
        valid = to_request(request)
        payload = to_payload(valid)
        self._send(payload, chunk_argsrepr([payload]))
        return valid.request_id

    def publish_many(self, requests: Iterable[RequestLike], *, chunk_size: int | None = None) -> list[str]:
        """Validate **all** requests, then send them in chunks; returns every request id in order.

        Nothing is sent when any request is invalid. For inputs too large to hold in memory use
        :meth:`publish_stream`.
        """
        valid = [to_request(r, i) for i, r in enumerate(requests)]
        return [
            rid for chunk in self.publish_stream(valid, chunk_size=chunk_size) for rid in chunk.request_ids
        ]

    def publish_stream(
        self, requests: Iterable[RequestLike], *, chunk_size: int | None = None
    ) -> Iterator[PublishedChunk]:
        """Lazily send ``requests`` one chunk (one task message) at a time, yielding each sent chunk.

        Memory stays flat whatever the input's length. Each chunk is validated before it is sent, so
        an invalid request raises ``InvalidRequestError`` (with its index) before its chunk goes out;
        the chunks yielded before it were sent.
        """
        size = check_chunk_size(chunk_size or self.chunk_size)
        iterator = iter(requests)
        start = 0
        while batch := list(islice(iterator, size)):
            valid = [to_request(r, start + i) for i, r in enumerate(batch)]
            payloads = [to_payload(r) for r in valid]
            task_id = self._send(payloads, chunk_argsrepr(payloads))
            yield PublishedChunk(task_id, start, [r.request_id for r in valid])
            start += len(batch)

    @abstractmethod
    def _send(self, payload: TaskPayload, argsrepr: str) -> str:
        """Send one intake task message; returns its task id."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

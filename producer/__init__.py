"""unsub-relay producer library: publish unsubscribe requests (message contract v1)."""

from producer.base import DEFAULT_CHUNK_SIZE, BasePublisher, PublishedChunk
from producer.client import DEFAULT_RETRY_POLICY, Producer, RetryPolicy
from producer.contract import ConnectionTarget, Scope, Source, UnsubscribeRequest, parse_request
from producer.errors import InvalidRequestError, ProducerError, PublishError
from producer.masking import mask_email
from producer.memory import MemoryProducer, SentMessage
from producer.native import publish_json

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_RETRY_POLICY",
    "BasePublisher",
    "ConnectionTarget",
    "InvalidRequestError",
    "MemoryProducer",
    "Producer",
    "ProducerError",
    "PublishError",
    "PublishedChunk",
    "RetryPolicy",
    "Scope",
    "SentMessage",
    "Source",
    "UnsubscribeRequest",
    "mask_email",
    "parse_request",
    "publish_json",
]

"""The adapter interface: the only place that knows a provider's API.

The pipeline hands an adapter a batch of records that share a :meth:`Adapter.batch_key` and gets
back exactly one :class:`Outcome` per record, in order. Adapters never raise for provider trouble:
every failure becomes an outcome. A new provider is one new module implementing :class:`Adapter`
and one line in ``worker/adapters/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    import httpx
    import redis

from worker.connection import ConnectionBase
from worker.reasons import DeadReason
from worker.records import DeliveryRecord

#: Longest provider response excerpt kept for a dead letter (after redaction).
EXCERPT_CHARS: Final = 500


class OutcomeKind(StrEnum):
    DELIVERED = "delivered"
    #: Transient failure: try again later, not before ``not_before``.
    RETRY = "retry"
    #: Credentials refused even after a fresh token: the connection needs an operator.
    REAUTH = "reauth"
    #: Can never succeed: dead-letter with ``reason``.
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one record."""

    kind: OutcomeKind
    #: Machine-readable code: the dead-letter reason (``contact_not_found``...) or retry cause (``http_503``).
    reason: str | None = None
    #: Readable explanation for an operator.
    message: str | None = None
    #: The provider's HTTP status, when there was a response.
    status: int | None = None
    #: Redacted excerpt of the provider's response.
    excerpt: str | None = None
    #: Retry no earlier than this (epoch seconds), e.g. from ``Retry-After``.
    not_before: float | None = None

    @classmethod
    def delivered(cls, *, status: int | None = None) -> Outcome:
        return cls(OutcomeKind.DELIVERED, status=status)

    @classmethod
    def retry(
        cls,
        reason: str,
        message: str,
        *,
        status: int | None = None,
        excerpt: str | None = None,
        not_before: float | None = None,
    ) -> Outcome:
        return cls(OutcomeKind.RETRY, reason, message, status, _cut(excerpt), not_before)

    @classmethod
    def reauth(cls, message: str, *, status: int | None = 401, excerpt: str | None = None) -> Outcome:
        return cls(OutcomeKind.REAUTH, DeadReason.AUTH_FAILED, message, status, _cut(excerpt))

    @classmethod
    def dead(
        cls, reason: str, message: str, *, status: int | None = None, excerpt: str | None = None
    ) -> Outcome:
        return cls(OutcomeKind.DEAD, reason, message, status, _cut(excerpt))


def _cut(excerpt: str | None) -> str | None:
    if excerpt is None:
        return None
    from worker.logs import redact_text  # local: keeps this module import-light

    text = redact_text(excerpt)
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


class CallGate(Protocol):
    """Admission to a provider endpoint, shared by every worker (the rate limiter)."""

    def acquire(self) -> None:
        """Block until one request may be sent. Raises ``RateLimitedError`` if the wait would be too long."""

    def penalize(self, retry_after_s: float | None) -> None:
        """The provider answered 429: slow every worker on this connection down."""


class CallObserver(Protocol):
    """Told about every provider call (counts, latency histograms)."""

    def on_call(self, operation: str, status: int | None, duration_s: float) -> None: ...

    def on_token_refresh(self) -> None: ...


class OpenGate:
    """A gate that never waits (unit tests, the sandbox's own clients)."""

    def acquire(self) -> None:
        return None

    def penalize(self, retry_after_s: float | None) -> None:
        return None


@dataclass
class NullObserver:
    """Counts calls in memory; used where nothing is exported."""

    calls: int = 0
    token_refreshes: int = 0
    statuses: list[int | None] = field(default_factory=list)

    def on_call(self, operation: str, status: int | None, duration_s: float) -> None:
        self.calls += 1
        self.statuses.append(status)

    def on_token_refresh(self) -> None:
        self.token_refreshes += 1


@dataclass
class AdapterDeps:
    """What an adapter is given besides its connection settings."""

    #: The state store: token cache and locks, contact-id cache.
    redis: redis.Redis
    #: Admission for provider API calls (the connection's shared rate limit).
    gate: CallGate = field(default_factory=OpenGate)
    #: Admission for token endpoint calls (e.g. Constant Contact's 1 request a second).
    token_gate: CallGate = field(default_factory=OpenGate)
    observer: CallObserver = field(default_factory=NullObserver)
    #: Replaces the network in tests (httpx.MockTransport); None means real HTTP.
    transport: httpx.BaseTransport | None = None


class Adapter(Protocol):
    """Turns a batch of records into provider calls and per-record outcomes."""

    connection: ConnectionBase

    @property
    def max_batch_size(self) -> int:
        """Most records one call may carry (the provider's limit, or the connection's smaller setting)."""

    def batch_key(self, record: DeliveryRecord) -> Hashable:
        """Records with equal keys may travel in one call."""

    def precheck(self, record: DeliveryRecord) -> Outcome | None:
        """An outcome decided without calling the provider (e.g. a missing Customer Key), else None."""

    def deliver(self, batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        """Deliver records sharing one batch key; exactly one outcome per record, in order."""

    def close(self) -> None:
        """Release pooled connections."""

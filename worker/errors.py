"""Every exception the worker package raises, in one tree.

    UnsubRelayError
     ├── ConfigError                 settings are invalid; ``problems`` names each bad field
     ├── StateStoreError             Redis (the state store) failed or held something unreadable
     ├── ProviderError               a provider call failed (raised inside adapters, turned into outcomes)
     │    ├── TransientProviderError     worth retrying: 5xx, 408/425/429, timeouts, connection errors
     │    │    └── RateLimitedError          the provider said 429 / the shared limiter is exhausted
     │    ├── AuthenticationError        credentials refused even after a fresh token
     │    └── PermanentProviderError     retrying cannot help: 400/404/422 and provider FAILUREs
     └── DeadLetterError             a dead letter cannot be shown, replayed or purged as asked

Adapters never let these escape to the pipeline: ``deliver()`` returns one outcome per record.
"""

from __future__ import annotations


class UnsubRelayError(Exception):
    """Root of every error raised by the worker package."""


class ConfigError(UnsubRelayError):
    """The settings are invalid. ``problems`` holds one ``field: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class StateStoreError(UnsubRelayError):
    """The Redis state store failed, or held data this version cannot read."""


class ProviderError(UnsubRelayError):
    """A provider call failed. ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, excerpt: str | None = None) -> None:
        self.status = status
        self.excerpt = excerpt
        super().__init__(message)


class TransientProviderError(ProviderError):
    """Retrying later may succeed. ``retry_after_s`` is the provider's own floor, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        excerpt: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message, status=status, excerpt=excerpt)


class RateLimitedError(TransientProviderError):
    """The provider throttled us (429), or our shared limiter ran out for longer than we may wait."""


class AuthenticationError(ProviderError):
    """The provider refused our credentials even with a freshly issued token."""


class PermanentProviderError(ProviderError):
    """The provider rejected the request itself; sending it again cannot help."""


class DeadLetterError(UnsubRelayError):
    """A dead letter cannot be shown, replayed or purged as asked."""

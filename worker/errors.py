"""Every exception the worker package raises, in one tree.

    UnsubRelayError
     ├── ConfigError                 settings are invalid; ``problems`` names each bad field
     ├── FileFormatError             an import file as a whole cannot be read (no header, unknown columns)
     ├── IntakeStoppedError          Redis refuses the intake loop's own keys for good (the worker exits 1)
     ├── NotAnEnvelopeError          an item on a broker list is no kombu message envelope (worker.transport)
     └── ProviderError               a provider call failed (raised inside adapters, turned into outcomes)
          ├── TransientProviderError     worth retrying: 5xx, 408/425/429, timeouts, connection errors
          │    └── RateLimitedError          the provider said 429 / the shared limiter is exhausted
          └── AuthenticationError        credentials refused even after a fresh token

Adapters never let provider errors escape to the pipeline: ``deliver()`` returns one outcome per
record. Redis errors are redis-py's own (the pipeline's callers retry them). The development tools
(``unsub_dev``: sandbox, local stack, demo) have their own tree under ``DevToolError``; the producer
library has its own (``producer.errors``) and never needs the worker package.
"""

from __future__ import annotations


class UnsubRelayError(Exception):
    """Root of every error raised by the worker package."""


class ConfigError(UnsubRelayError):
    """The settings are invalid. ``problems`` holds one ``field: message`` line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class FileFormatError(UnsubRelayError):
    """The import file as a whole cannot be imported (no header, unknown columns): nothing is sent."""


class IntakeStoppedError(UnsubRelayError):
    """The intake loop cannot go on: a key it works on holds another type of value (WRONGTYPE), so
    every turn would fail the same way. The worker exits 1 rather than look alive taking nothing in."""


class NotAnEnvelopeError(UnsubRelayError):
    """An item on a list the worker consumes is not a kombu message envelope; the message says why.
    Raised while kombu builds its message, caught by the channel that read the item (never escapes)."""


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

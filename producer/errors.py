"""Exceptions raised by the producer library.

ProducerError
 ├── InvalidRequestError      a request does not follow the message contract (nothing was sent)
 └── PublishError             the broker could not take the message after retries
"""

from __future__ import annotations


class ProducerError(Exception):
    """Root of every error the producer library raises."""


class InvalidRequestError(ProducerError, ValueError):
    """A request does not follow the message contract; nothing was sent.

    ``problems`` lists each bad field as ``"field: message"``.
    """

    def __init__(self, problems: list[str], *, index: int | None = None) -> None:
        self.problems = problems
        self.index = index
        where = f"request #{index}: " if index is not None else ""
        super().__init__(where + "; ".join(problems))


class PublishError(ProducerError):
    """The broker did not accept the message, even after retrying."""

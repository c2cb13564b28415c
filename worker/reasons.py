"""Every reason and cause code the system writes, in one place.

Operators filter dead letters by these (``unsub dlq list --reason``), ``unsub status`` shows them,
dashboards and alerts count them: one spelling each. Retry causes that are HTTP statuses are made
by :func:`http_cause` (``http_503``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class DeadReason(StrEnum):
    """Why a request, a record or a whole message was dead-lettered."""

    #: A message or request that breaks the contract (JSON, shape, fields).
    INVALID_MESSAGE = "invalid_message"
    #: The request is fine but its address is not.
    INVALID_EMAIL = "invalid_email"
    #: The request names connections nobody configured.
    UNKNOWN_CONNECTION = "unknown_connection"
    CONNECTION_DISABLED = "connection_disabled"
    #: List scope, but no list or group the provider could honour (it is never widened).
    NO_LIST_TARGET = "no_list_target"
    #: A WhatCounts realm that requires a Customer Key, and the request has none.
    MISSING_CUSTOMER_KEY = "missing_customer_key"
    CONTACT_NOT_FOUND = "contact_not_found"
    #: The provider refused this record for good.
    REJECTED_BY_PROVIDER = "rejected_by_provider"
    #: The target kind is one the provider cannot take (e.g. an Insider group name it refuses).
    UNSUPPORTED_TARGET = "unsupported_target"
    #: A WhatCounts record that alone does not fit in a GET URL.
    URL_TOO_LONG = "url_too_long"
    #: Its attempts or its maximum age ran out; the last error is in the letter.
    RETRIES_EXHAUSTED = "retries_exhausted"
    #: The credentials stayed refused until the record's maximum age.
    AUTH_FAILED = "auth_failed"
    #: A buffer entry that is not a readable delivery record.
    CORRUPT_RECORD = "corrupt_record"
    #: A record claimed again and again without an outcome (its delivery kills workers).
    POISON_RECORD = "poison_record"
    #: A whole intake message over the size or request limits (nothing in it was taken in).
    MESSAGE_TOO_LARGE = "message_too_large"
    #: A Celery message for a task nobody runs: on the intake queue, any task but ``unsub.intake``;
    #: on a queue Celery consumes, one that is not registered (``worker.side_queues``).
    UNKNOWN_TASK = "unknown_task"
    #: An intake message taken up again and again without an outcome (it stops whoever reads it).
    POISON_MESSAGE = "poison_message"


class RetryCause(StrEnum):
    """Why a record waits for another attempt (besides ``http_<status>``)."""

    #: Our shared rate limit gave no turn in time: a wait, not a failed attempt.
    RATE_LIMITED = "rate_limited"
    #: The provider said 429: a wait, not a failed attempt.
    HTTP_429 = "http_429"
    #: The adapter raised instead of returning outcomes (a bug): retried, logged with its traceback.
    ADAPTER_ERROR = "adapter_error"
    #: A whole-batch refusal was split as far as its budget allowed.
    SPLIT_BUDGET_EXHAUSTED = "split_budget_exhausted"
    #: The provider answered something the adapter cannot read.
    UNEXPECTED_RESPONSE = "unexpected_response"
    #: No answer in time.
    TIMEOUT = "timeout"
    #: No connection: refused, reset, DNS or TLS failure.
    CONNECTION_ERROR = "connection_error"


#: Retry causes that are not the record's fault: they wait as told but spend no attempt, and they
#: are not the provider failing (they never open the breaker).
NOT_AN_ATTEMPT: Final = frozenset({RetryCause.RATE_LIMITED, RetryCause.HTTP_429})


def http_cause(status: int) -> str:
    """The retry cause of a transient HTTP status (``http_503``)."""
    return f"http_{status}"

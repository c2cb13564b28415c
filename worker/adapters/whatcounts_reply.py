"""Reading WhatCounts ``api_web`` answers: one line of ``SUCCESS: ...`` or ``FAILURE: ...`` text.

Formats (the vendor's Unsubscribe page; older pages say "subscribers" for "contacts"), one line each::

    SUCCESS: 3 record(s) processed. 2 users unsubscribed from list(s) 5 (2 total contacts),
        Records Failed Other Error 1
    FAILURE: 1 record(s) processed. 0 users unsubscribed from list(s) 5 (0 total contacts),
        Records Failed Other Error 1
    FAILURE: Unable to determine customer account (realm)

The counts say how many records failed but never which. Unsubscribing an address that is not on
the list is not a failure (``SUCCESS: 1 record(s) processed. 0 users unsubscribed ...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from worker.reasons import DeadReason

_LINE: Final = re.compile(r"^\s*(?P<kind>SUCCESS|FAILURE)\s*:?\s*(?P<detail>.*)$", re.IGNORECASE | re.DOTALL)
_COUNTS: Final = re.compile(
    r"(?P<processed>\d+)\s+record\(s\)\s+processed.*?Records\s+Failed\s+Other\s+Error\s+(?P<failed>\d+)",
    re.IGNORECASE | re.DOTALL,
)


class FailureKind(StrEnum):
    """What a ``FAILURE: <reason>`` without counts is about."""

    #: The realm requires a Customer Key the call did not carry (or carried wrong).
    CUSTOMER_KEY = "customer_key"
    #: Realm, password, API access or caller IP refused.
    CREDENTIALS = "credentials"
    #: The list does not belong to the realm.
    UNKNOWN_LIST = "unknown_list"
    #: An address is not valid.
    INVALID_EMAIL = DeadReason.INVALID_EMAIL.value
    #: Anything else: some record of the call is refused.
    OTHER = "other"


#: FAILURE reasons, first match wins (texts observed from WhatCounts and its public clients).
FAILURE_TABLE: Final[tuple[tuple[re.Pattern[str], FailureKind], ...]] = (
    (re.compile(r"customer[ _-]?key", re.IGNORECASE), FailureKind.CUSTOMER_KEY),
    (re.compile(r"determine customer account", re.IGNORECASE), FailureKind.CREDENTIALS),
    (re.compile(r"API user credentials", re.IGNORECASE), FailureKind.CREDENTIALS),
    (
        re.compile(r"password|approved IP|not authori[sz]ed|authenticat", re.IGNORECASE),
        FailureKind.CREDENTIALS,
    ),
    (re.compile(r"list ids?\b", re.IGNORECASE), FailureKind.UNKNOWN_LIST),
    (re.compile(r"valid email|invalid email", re.IGNORECASE), FailureKind.INVALID_EMAIL),
)


@dataclass(frozen=True, slots=True)
class ApiWebReply:
    success: bool
    #: The text after ``SUCCESS:`` / ``FAILURE:``.
    detail: str
    processed: int | None = None
    failed: int | None = None

    @property
    def has_counts(self) -> bool:
        return self.processed is not None and self.failed is not None

    def failed_of(self, sent: int) -> int:
        """Records of ``sent`` that did not make it: those counted failed and those not processed."""
        processed = self.processed if self.processed is not None else sent
        return min(sent, (self.failed or 0) + max(sent - processed, 0))

    def failure_kind(self) -> FailureKind:
        for pattern, kind in FAILURE_TABLE:
            if pattern.search(self.detail):
                return kind
        return FailureKind.OTHER


def parse_reply(text: str) -> ApiWebReply | None:
    """The answer, or None when it is neither a SUCCESS nor a FAILURE line."""
    line = _LINE.match(text.strip())
    if line is None:
        return None
    detail = line.group("detail").strip()
    counts = _COUNTS.search(detail)
    processed = int(counts.group("processed")) if counts else None
    failed = int(counts.group("failed")) if counts else None
    return ApiWebReply(line.group("kind").upper() == "SUCCESS", detail, processed, failed)

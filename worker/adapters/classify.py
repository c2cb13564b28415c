"""What an HTTP status means for the records of a call: one table per provider.

Each adapter declares its :class:`StatusTable`: the statuses it knows exactly, and what every other
status of each class (2xx, 3xx, 4xx, 5xx) means. ``docs/providers.md`` shows every table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType


class Verdict(StrEnum):
    """What a provider's answer means for the records of the call."""

    #: Done.
    DELIVERED = "delivered"
    #: Transient: retry later, honouring ``Retry-After``.
    RETRY = "retry"
    #: The token may be stale: invalidate it, get a fresh one, try once more; still refused → REAUTH.
    RENEW_TOKEN = "renew_token"
    #: Credentials, privileges or the connection's configuration are refused: a fresh token cannot
    #: help. ``reauth`` outcome: the pipeline opens the circuit and keeps the records for an operator.
    REAUTH = "reauth"
    #: The provider refused the content: split the batch to find the records it refuses; a lone
    #: refused record is dead (``rejected_by_provider``).
    REJECTED = "rejected"
    #: The contact does not exist: dead (``contact_not_found``).
    NOT_FOUND = "not_found"


@dataclass(frozen=True)
class StatusTable:
    """Exact statuses first, then the verdict for the rest of the status's class."""

    exact: Mapping[int, Verdict]
    #: Verdict per status class (2 for 2xx...). A class not named here means REAUTH: an answer we
    #: cannot interpret must stop the connection rather than lose or wrongly deliver records.
    by_class: Mapping[int, Verdict]

    def __call__(self, status: int) -> Verdict:
        verdict = self.exact.get(status)
        if verdict is not None:
            return verdict
        return self.by_class.get(status // 100, Verdict.REAUTH)

    def rows(self) -> list[tuple[str, Verdict]]:
        """The table as (status or class, verdict) rows, for documentation and tests."""
        rows = [(str(status), verdict) for status, verdict in sorted(self.exact.items())]
        rows += [(f"other {cls}xx", verdict) for cls, verdict in sorted(self.by_class.items())]
        return rows


def status_table(exact: Mapping[int, Verdict], by_class: Mapping[int, Verdict]) -> StatusTable:
    return StatusTable(MappingProxyType(dict(exact)), MappingProxyType(dict(by_class)))


#: Transient statuses every provider shares (rate limits, timeouts, conflicts of concurrent writes).
TRANSIENT: Mapping[int, Verdict] = MappingProxyType(
    {408: Verdict.RETRY, 409: Verdict.RETRY, 425: Verdict.RETRY, 429: Verdict.RETRY}
)
#: 2xx delivered, 5xx retried; other 3xx/4xx stop the connection (see StatusTable.by_class).
STANDARD_CLASSES: Mapping[int, Verdict] = MappingProxyType({2: Verdict.DELIVERED, 5: Verdict.RETRY})

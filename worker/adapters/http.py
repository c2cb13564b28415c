"""One provider HTTP call: admission by the shared gate, timing, observation, transport failures.

Every adapter sends through :meth:`Caller.send`, which returns either the provider's
:class:`Reply` or, when no reply could be had (the rate limit is spent, a timeout, a refused
connection), a ``retry`` :class:`~worker.adapters.base.Outcome` that applies to every record of
the call. Nothing here raises for provider trouble.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, Final

import httpx

from worker.adapters.base import AdapterDeps, Outcome
from worker.connection import ConnectionBase
from worker.errors import RateLimitedError
from worker.logs import REDACTED, redact_text
from worker.reasons import RetryCause, http_cause

#: Statuses that carry a meaningful ``Retry-After``.
RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
#: ``Retry-After`` delta-seconds: digits, optionally with a fraction (never negative, never ``1e3``).
_DELTA_SECONDS: Final = re.compile(r"\d+(\.\d+)?")
#: Longest provider text kept in an outcome message (the excerpt holds more).
MESSAGE_CHARS: Final = 200

Scrub = Callable[[str], str]


@dataclass(frozen=True, slots=True)
class Reply:
    """What the provider answered."""

    status: int
    text: str
    headers: httpx.Headers

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None

    def retry_after_s(self, now: float | None = None) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"), now)


def make_client(
    conn: ConnectionBase, deps: AdapterDeps, headers: Mapping[str, str] | None = None
) -> httpx.Client:
    """The adapter's one pooled client: explicit timeout, TLS verified, no redirects followed."""
    return httpx.Client(
        timeout=httpx.Timeout(conn.timeout_s),
        verify=True,
        follow_redirects=False,
        transport=deps.transport,
        headers=dict(headers or {}),
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds to wait; None when absent or unreadable.

    Accepts delta-seconds, also with a fraction (``"1.5"``, sent by some gateways though RFC 9110
    says integer), and an HTTP date in any of the three forms RFC 9110 allows (IMF-fixdate, RFC 850,
    asctime). A date without a zone (asctime) is GMT, as HTTP dates always are. A date in the past
    means "now" (0).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


def not_before(wait_s: float | None, now: float | None = None) -> float | None:
    """Epoch seconds ``wait_s`` from now, or None."""
    if wait_s is None:
        return None
    return (time.time() if now is None else now) + wait_s


def scrubber(*secrets: str) -> Scrub:
    """Removes these exact values (any length) and then everything ``redact_text`` knows."""
    known = [s for s in secrets if s]

    def scrub(text: str) -> str:
        for secret in known:
            text = text.replace(secret, REDACTED)
        return redact_text(text)

    return scrub


class Caller:
    """Sends requests of one adapter through the shared gate and reports each to the observer."""

    def __init__(self, client: httpx.Client, deps: AdapterDeps, *, provider: str, scrub: Scrub) -> None:
        self.client = client
        self.deps = deps
        self.provider = provider
        self.scrub = scrub

    def send(self, operation: str, request: httpx.Request) -> Reply | Outcome:
        """One call; a retry outcome when there is no reply to judge."""
        try:
            self.deps.gate.acquire()
        except RateLimitedError as exc:
            return Outcome.retry(
                RetryCause.RATE_LIMITED,
                f"{self.provider} rate limit spent: {exc}",
                not_before=not_before(exc.retry_after_s),
            )
        started = time.monotonic()
        try:
            response = self.client.send(request)
        except httpx.HTTPError as exc:
            self.deps.observer.on_call(operation, None, time.monotonic() - started)
            return self._transport_failure(operation, exc)
        self.deps.observer.on_call(operation, response.status_code, time.monotonic() - started)
        reply = Reply(response.status_code, response.text, response.headers)
        if reply.status == 429:
            self.deps.gate.penalize(reply.retry_after_s())
        return reply

    def retry(self, reply: Reply, operation: str) -> Outcome:
        """A ``retry`` outcome for a transient status, honouring ``Retry-After``."""
        return Outcome.retry(
            http_cause(reply.status),
            f"{self.provider} {operation} answered HTTP {reply.status}: {self.brief(reply)}",
            status=reply.status,
            excerpt=self.excerpt(reply),
            not_before=not_before(reply.retry_after_s()),
        )

    def excerpt(self, reply: Reply) -> str:
        """The response body, secrets removed (the outcome cuts it)."""
        return self.scrub(reply.text)

    def brief(self, reply: Reply) -> str:
        """A short, scrubbed form of the response body for an outcome message."""
        text = " ".join(self.scrub(reply.text).split())
        return (text[: MESSAGE_CHARS - 1] + "…") if len(text) > MESSAGE_CHARS else (text or "(empty body)")

    def _transport_failure(self, operation: str, exc: httpx.HTTPError) -> Outcome:
        reason = (
            RetryCause.TIMEOUT if isinstance(exc, httpx.TimeoutException) else RetryCause.CONNECTION_ERROR
        )
        detail = self.scrub(str(exc)) or type(exc).__name__
        return Outcome.retry(reason, f"{self.provider} {operation}: {type(exc).__name__}: {detail}")

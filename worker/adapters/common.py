"""What every HTTP adapter shares: its pooled client, its caller, turning verdicts into outcomes."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final

from worker.adapters.auth import TokenManager
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import StatusTable, Verdict
from worker.adapters.http import MESSAGE_CHARS, Caller, Reply, make_client, not_before, scrubber
from worker.adapters.split import Rejected, Result
from worker.connection import ConnectionBase
from worker.errors import AuthenticationError, ProviderError, RateLimitedError, TransientProviderError
from worker.logs import get_logger, register_secrets
from worker.reasons import DeadReason, RetryCause
from worker.records import DeliveryRecord

REJECTED_BY_PROVIDER: Final = DeadReason.REJECTED_BY_PROVIDER
CONTACT_NOT_FOUND: Final = DeadReason.CONTACT_NOT_FOUND
INVALID_EMAIL: Final = DeadReason.INVALID_EMAIL
UNSUPPORTED_TARGET: Final = DeadReason.UNSUPPORTED_TARGET
log = get_logger(__name__)

#: Provider texts that say the address itself is what is wrong: they name an email and call it invalid.
_EMAIL_WORD: Final = re.compile(r"e-?mail", re.IGNORECASE)
_INVALID_WORD: Final = re.compile(r"invalid|not (appear to be )?(a )?valid|malformed", re.IGNORECASE)
#: ...unless it is Insider's uploader address (a setting of the connection, not the record).
_UPLOADER_WORD: Final = re.compile(r"uploader", re.IGNORECASE)


#: How operators know each provider: messages say "from Constant Contact", not "from cc_partner".
PROVIDER_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "cc_partner": "Constant Contact",
        "cc_contacts": "Constant Contact",
        "whatcounts": "WhatCounts",
        "insider": "Insider",
        "easytools": "easy.tools",
    }
)
#: What a status that stops a connection usually means; an adapter may say more for its provider.
REAUTH_MEANINGS: Final[Mapping[int, str]] = MappingProxyType(
    {
        401: "credentials refused",
        403: "access refused: a missing scope or privilege, or a deactivated application",
        404: "not found: the connection's base_url or account setting is wrong",
    }
)
#: What a dead outcome's reason means, in its message.
DEAD_MEANINGS: Final[Mapping[str, str]] = MappingProxyType(
    {
        CONTACT_NOT_FOUND: "no such contact",
        INVALID_EMAIL: "refused the address as invalid",
        REJECTED_BY_PROVIDER: "refused this record",
    }
)
SETTINGS_REFUSED: Final = "refused the connection's credentials or settings"
RENEWED_401: Final = "credentials refused even with a freshly issued token"
#: JSON keys under which providers put their error words (CC, Insider, easy.tools, OAuth2, generic).
_WORD_KEYS: Final = frozenset(
    {"error_key", "error_message", "statusMessage", "code", "message", "error", "error_description", "detail"}
)
#: How deep to look for them in an error body.
_WORD_DEPTH: Final = 4


def provider_words(text: str, scrub: Callable[[str], str]) -> str:
    """The provider's own explanation in a response body, redacted and short.

    From a JSON error body its message fields only (``error_key: error_message``...), else the text.
    """
    try:
        found = _words(json.loads(text), _WORD_DEPTH)
    except ValueError:
        found = []
    words = ": ".join(dict.fromkeys(found)) if found else text
    flat = " ".join(scrub(words).split())
    return (flat[: MESSAGE_CHARS - 1] + "…") if len(flat) > MESSAGE_CHARS else (flat or "empty body")


def _words(data: Any, depth: int) -> list[str]:
    if depth <= 0:
        return []
    if isinstance(data, list):
        return [word for item in data for word in _words(item, depth - 1)]
    if not isinstance(data, dict):
        return []
    found: list[str] = []
    for key, value in data.items():
        if key in _WORD_KEYS and isinstance(value, str | int) and not isinstance(value, bool):
            found.append(str(value))
        else:
            found += _words(value, depth - 1)
    return found


def refusal_reason(text: str) -> str:
    """``invalid_email`` when the provider's text calls the address invalid, else ``rejected_by_provider``."""
    says_bad_email = bool(_EMAIL_WORD.search(text) and _INVALID_WORD.search(text))
    return INVALID_EMAIL if says_bad_email and not _UPLOADER_WORD.search(text) else REJECTED_BY_PROVIDER


class HttpAdapter:
    """Owns one pooled ``httpx.Client`` (one per connection per process) and its :class:`Caller`."""

    provider: str = "provider"
    #: The provider's own limit of records per call.
    provider_max_batch: int = 1
    #: What a status that stops the connection (REAUTH) means for this provider, for the operator.
    reauth_meanings: Mapping[int, str] = REAUTH_MEANINGS
    connection: ConnectionBase

    def __init__(
        self,
        conn: ConnectionBase,
        deps: AdapterDeps,
        *,
        headers: Mapping[str, str] | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        self.connection = conn
        self.deps = deps
        register_secrets(secrets)
        self.client = make_client(conn, deps, headers)
        self.caller = Caller(self.client, deps, provider=self.provider, scrub=scrubber(*secrets))

    @property
    def max_batch_size(self) -> int:
        return min(self.connection.batch_size or self.provider_max_batch, self.provider_max_batch)

    def close(self) -> None:
        self.client.close()

    def judge(self, reply: Reply, verdict: Verdict, count: int, operation: str) -> Result:
        """The outcomes of a call of ``count`` records that got ``reply``, as ``verdict`` says."""
        if verdict is Verdict.DELIVERED:
            return [Outcome.delivered(status=reply.status)] * count
        if verdict is Verdict.RETRY:
            return [self.caller.retry(reply, operation)] * count
        if verdict is Verdict.REJECTED:
            return Rejected(self.dead(refusal_reason(reply.text), reply, operation))
        if verdict is Verdict.NOT_FOUND:
            return [self.dead(CONTACT_NOT_FOUND, reply, operation)] * count
        return [self.reauth(reply, operation, renewed=verdict is Verdict.RENEW_TOKEN)] * count

    def judge_one(self, reply: Reply, verdict: Verdict, operation: str) -> Outcome:
        """The outcome of a one-record call (a refusal is final: there is nothing to split)."""
        result = self.judge(reply, verdict, 1, operation)
        return result[0] if isinstance(result, list) else result.outcome

    def dead(self, reason: str, reply: Reply, operation: str) -> Outcome:
        message = self.explain(reply, operation, DEAD_MEANINGS.get(reason, "refused this record"))
        return Outcome.dead(reason, message, status=reply.status, excerpt=self.caller.excerpt(reply))

    def reauth(self, reply: Reply, operation: str, *, renewed: bool = False) -> Outcome:
        meaning = RENEWED_401 if renewed else self.reauth_meanings.get(reply.status, SETTINGS_REFUSED)
        message = self.explain(reply, operation, meaning)
        return stop_connection(message, status=reply.status, excerpt=self.caller.excerpt(reply))

    def explain(self, reply: Reply, operation: str, meaning: str) -> str:
        """``HTTP 404 from Constant Contact unsubscribe: account not found (...)``: the status, what it
        means here and the provider's own words (redacted), for the log, the dead letter and status."""
        name = PROVIDER_NAMES.get(self.provider, self.provider)
        words = provider_words(reply.text, self.caller.scrub)
        return f"HTTP {reply.status} from {name} {operation}: {meaning} ({words})"


def stop_connection(message: str, *, status: int | None, excerpt: str | None = None) -> Outcome:
    """A ``reauth`` outcome. The breaker's one error when it opens carries ``message``; each refused
    call (the first, then every probe) is a warning with it, so a log shows it is still refused."""
    log.warning("provider refused the connection's credentials or settings", detail=message, status=status)
    return Outcome.reauth(message, status=status, excerpt=excerpt)


def unsupported_target(provider: str, record: DeliveryRecord) -> Outcome:
    return Outcome.dead(UNSUPPORTED_TARGET, f"{provider} cannot deliver to target {record.target!r}")


def token_failure(provider: str, exc: ProviderError) -> Outcome:
    """The outcome of every record of a call that could not get a token."""
    message = f"{PROVIDER_NAMES.get(provider, provider)} issued no access token: {exc}"
    if isinstance(exc, AuthenticationError):
        return stop_connection(message, status=exc.status)
    if isinstance(exc, RateLimitedError):
        return Outcome.retry(
            RetryCause.RATE_LIMITED, message, status=exc.status, not_before=not_before(exc.retry_after_s)
        )
    wait_s = exc.retry_after_s if isinstance(exc, TransientProviderError) else None
    return Outcome.retry("token_unavailable", message, status=exc.status, not_before=not_before(wait_s))


def send_with_token(
    provider: str, tokens: TokenManager, table: StatusTable, send: Callable[[str], Reply | Outcome]
) -> Reply | Outcome:
    """Send with the shared token; on a 401 replace exactly that token and send once more.

    A second 401 is returned as it is: its verdict (RENEW_TOKEN again) then means "refused after a
    fresh token", a ``reauth`` outcome.
    """
    try:
        token = tokens.token()
    except ProviderError as exc:
        return token_failure(provider, exc)
    reply = send(token)
    if not isinstance(reply, Reply) or table(reply.status) is not Verdict.RENEW_TOKEN:
        return reply
    try:
        fresh = tokens.renew_after_rejection(token)
    except ProviderError as exc:
        return token_failure(provider, exc)
    return send(fresh)

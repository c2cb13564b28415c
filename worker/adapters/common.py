"""What every HTTP adapter shares: its pooled client, its caller, turning verdicts into outcomes."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from worker.adapters.auth import TokenManager
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import StatusTable, Verdict
from worker.adapters.http import Caller, Reply, make_client, not_before, scrubber
from worker.adapters.split import Rejected, Result
from worker.errors import AuthenticationError, ProviderError, RateLimitedError, TransientProviderError
from worker.logs import register_secrets
from worker.records import DeliveryRecord
from worker.settings import ConnectionBase

REJECTED_BY_PROVIDER: Final = "rejected_by_provider"
CONTACT_NOT_FOUND: Final = "contact_not_found"
INVALID_EMAIL: Final = "invalid_email"
UNSUPPORTED_TARGET: Final = "unsupported_target"
#: Provider texts that say the address itself is what is wrong: they name an email and call it invalid.
_EMAIL_WORD: Final = re.compile(r"e-?mail", re.IGNORECASE)
_INVALID_WORD: Final = re.compile(r"invalid|not (appear to be )?(a )?valid|malformed", re.IGNORECASE)
#: ...unless it is Insider's uploader address (a setting of the connection, not the record).
_UPLOADER_WORD: Final = re.compile(r"uploader", re.IGNORECASE)


def refusal_reason(text: str) -> str:
    """``invalid_email`` when the provider's text calls the address invalid, else ``rejected_by_provider``."""
    says_bad_email = bool(_EMAIL_WORD.search(text) and _INVALID_WORD.search(text))
    return INVALID_EMAIL if says_bad_email and not _UPLOADER_WORD.search(text) else REJECTED_BY_PROVIDER


class HttpAdapter:
    """Owns one pooled ``httpx.Client`` (one per connection per process) and its :class:`Caller`."""

    provider: str = "provider"
    #: The provider's own limit of records per call.
    provider_max_batch: int = 1
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
        message = f"{self.provider} {operation} refused it (HTTP {reply.status}): {self.caller.brief(reply)}"
        return Outcome.dead(reason, message, status=reply.status, excerpt=self.caller.excerpt(reply))

    def reauth(self, reply: Reply, operation: str, *, renewed: bool = False) -> Outcome:
        why = "refused a freshly issued token" if renewed else "refused the credentials or settings"
        message = f"{self.provider} {operation} {why} (HTTP {reply.status}): {self.caller.brief(reply)}"
        return Outcome.reauth(message, status=reply.status, excerpt=self.caller.excerpt(reply))


def unsupported_target(provider: str, record: DeliveryRecord) -> Outcome:
    return Outcome.dead(UNSUPPORTED_TARGET, f"{provider} cannot deliver to target {record.target!r}")


def token_failure(provider: str, exc: ProviderError) -> Outcome:
    """The outcome of every record of a call that could not get a token."""
    message = f"{provider} could not get an access token ({exc})"
    if isinstance(exc, AuthenticationError):
        return Outcome.reauth(message, status=exc.status)
    if isinstance(exc, RateLimitedError):
        return Outcome.retry(
            "rate_limited", message, status=exc.status, not_before=not_before(exc.retry_after_s)
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

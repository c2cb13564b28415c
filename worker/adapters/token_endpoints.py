"""Constant Contact's token endpoints, and the token manager of each token-using connection.

- Partner JWT: client credentials at the Cognito endpoint, ``POST token_url?grant_type=client_credentials``
  with ``Authorization: Basic base64(client_id:client_secret)``, a form content type and an empty
  body. It lasts an hour and cannot be refreshed: renewal is a new client-credentials call.
- Contacts API: ``POST token_url`` with the form ``grant_type=refresh_token&refresh_token=...`` and
  the same Basic client credentials. The access token lasts 24 hours; a rotating refresh token is
  single use, so the one the response carries is stored back (``keys.refresh_token``); the stored
  one wins over the settings' bootstrap value until the settings hold another refresh token (a
  re-authorisation, see :mod:`worker.adapters.refresh_tokens`).

Every call passes ``deps.token_gate`` (the endpoint allows about one request a second) and is
counted by ``deps.observer.on_token_refresh``. Answers become :class:`IssuedToken` or an error of
:mod:`worker.errors`: refused credentials or grants raise ``AuthenticationError`` (an operator must
act), transient trouble ``TransientProviderError`` (``RateLimitedError`` for a 429).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import httpx
import redis

from worker.adapters.auth import TOKEN_LOCK_EXTRA_S, Fetch, IssuedToken, TokenManager
from worker.adapters.base import AdapterDeps
from worker.adapters.classify import STANDARD_CLASSES, TRANSIENT, Verdict, status_table
from worker.adapters.http import Reply, make_client, parse_retry_after, scrubber
from worker.adapters.refresh_tokens import fingerprint, read_stored, token_to_spend
from worker.errors import AuthenticationError, RateLimitedError, TransientProviderError

#: Lifetimes assumed when a token response carries no ``expires_in``.
PARTNER_TOKEN_LIFETIME_S: Final = 3600.0
CONTACTS_TOKEN_LIFETIME_S: Final = 24 * 3600.0
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

#: Token endpoint answers: 2xx a token; transient statuses retried; anything else (400
#: invalid_grant/invalid_client, 401, 403, 404 wrong URL, 415) means the credentials or the
#: connection's settings are refused.
TOKEN_STATUS: Final = status_table(TRANSIENT, STANDARD_CLASSES)


class TokenEndpoint:
    """Calls one token endpoint through the token gate and reads its answer."""

    def __init__(
        self,
        client: httpx.Client,
        deps: AdapterDeps,
        *,
        url: str,
        client_id: str,
        client_secret: str,
        default_lifetime_s: float,
    ) -> None:
        self._client = client
        self._deps = deps
        self._url = url
        self._auth = httpx.BasicAuth(client_id, client_secret)
        self._default_lifetime_s = default_lifetime_s
        self._scrub = scrubber(client_secret)

    @classmethod
    def of(
        cls, conn: Any, client: httpx.Client, deps: AdapterDeps, *, default_lifetime_s: float
    ) -> TokenEndpoint:
        """The token endpoint of a connection with ``token_url``, ``client_id`` and ``client_secret``."""
        return cls(
            client,
            deps,
            url=str(conn.token_url),
            client_id=conn.client_id,
            client_secret=conn.client_secret.get_secret_value(),
            default_lifetime_s=default_lifetime_s,
        )

    def post(
        self, *, params: Mapping[str, str] | None = None, form: Mapping[str, str] | None = None
    ) -> IssuedToken:
        self._deps.token_gate.acquire()  # may raise RateLimitedError: the caller turns it into a retry
        self._deps.observer.on_token_refresh()
        body = str(httpx.QueryParams(form or {})).encode()
        request = self._client.build_request(
            "POST",
            self._url,
            params=params,
            content=body,
            headers={"Content-Type": FORM_CONTENT_TYPE, "Accept": "application/json"},
        )
        issued_at = time.time()
        try:
            response = self._client.send(request, auth=self._auth)
        except httpx.HTTPError as exc:
            raise TransientProviderError(
                f"OAuth endpoint: {type(exc).__name__}: {self._scrub(str(exc))}"
            ) from None
        return self._read(Reply(response.status_code, response.text, response.headers), issued_at)

    def _read(self, reply: Reply, issued_at: float) -> IssuedToken:
        verdict = TOKEN_STATUS(reply.status)
        detail = self._detail(reply)
        if verdict is Verdict.RETRY:
            wait_s = parse_retry_after(reply.headers.get("retry-after"))
            if reply.status == 429:
                self._deps.token_gate.penalize(wait_s)
                raise RateLimitedError(
                    f"OAuth endpoint throttled us (HTTP 429){detail}", status=429, retry_after_s=wait_s
                )
            raise TransientProviderError(
                f"OAuth endpoint answered HTTP {reply.status}{detail}",
                status=reply.status,
                retry_after_s=wait_s,
            )
        if verdict is not Verdict.DELIVERED:
            raise AuthenticationError(
                f"OAuth endpoint refused the credentials (HTTP {reply.status}){detail}", status=reply.status
            )
        return self._token(reply, issued_at)

    def _token(self, reply: Reply, issued_at: float) -> IssuedToken:
        body = reply.json()
        access = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(access, str) or not access:
            raise AuthenticationError("OAuth endpoint answered without an access_token", status=reply.status)
        lifetime = body.get("expires_in")
        lifetime_s = (
            float(lifetime)
            if isinstance(lifetime, int | float) and lifetime > 0
            else self._default_lifetime_s
        )
        refresh = body.get("refresh_token")
        return IssuedToken(
            access,
            issued_at,
            issued_at + lifetime_s,
            refresh if isinstance(refresh, str) and refresh else None,
        )

    def _detail(self, reply: Reply) -> str:
        """The OAuth2 ``error`` code of an error answer (never the body: it may echo credentials)."""
        body = reply.json()
        error = body.get("error") if isinstance(body, dict) else None
        return f": {self._scrub(error)}" if isinstance(error, str) else ""


def rotating_refresh_fetch(
    endpoint: TokenEndpoint, client: redis.Redis, *, connection: str, configured: str
) -> Fetch:
    """The refresh-token grant of a connection whose refresh tokens may rotate.

    Each call spends the stored token or the configured one (:func:`token_to_spend`); the answer
    names the configured token its chain began with, so the rotated token is stored with it.
    """
    origin = fingerprint(configured)

    def fetch() -> IssuedToken:
        refresh = token_to_spend(read_stored(client, connection), configured)
        issued = endpoint.post(form={"grant_type": "refresh_token", "refresh_token": refresh})
        return dataclasses.replace(issued, refresh_origin=origin)

    return fetch


class TokenConnection(Protocol):
    """What a connection whose tokens expire has (its provider defines how to fetch one)."""

    @property
    def name(self) -> str: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def token_refresh_margin_s(self) -> float: ...


FetchFactory = Callable[[Any, httpx.Client, AdapterDeps], Fetch]


def token_manager(
    conn: TokenConnection, deps: AdapterDeps, client: httpx.Client, fetch: FetchFactory
) -> TokenManager:
    """The shared token of a connection, fetched with ``client`` the way its provider says."""
    return TokenManager(
        connection=conn.name,
        client=deps.redis,
        fetch=fetch(conn, client, deps),
        refresh_margin_s=conn.token_refresh_margin_s,
        lock_ttl_s=conn.timeout_s + TOKEN_LOCK_EXTRA_S,
    )


def refresh_if_due(
    conn: Any, deps: AdapterDeps, fetch: FetchFactory, *, client: httpx.Client | None = None
) -> bool:
    """Renew the connection's token ahead of its expiry (the scheduler's periodic task).

    True when this call renewed it; False when the token is not due or another worker is renewing
    it. Raises ``AuthenticationError`` / ``TransientProviderError`` when the token endpoint refuses
    or fails.
    """
    http = client if client is not None else make_client(conn, deps)
    try:
        return token_manager(conn, deps, http, fetch).refresh_if_due()
    finally:
        if client is None:
            http.close()

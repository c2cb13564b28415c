"""Access tokens shared by every worker: cached in Redis, renewed by one worker at a time.

A :class:`TokenManager` keeps one connection's token in Redis (``keys.token``: JSON with its
expiry, expiring with it) so every worker process and thread uses the same one:

- :meth:`TokenManager.token` returns the cached token. When the token is *due* (within
  ``refresh_margin_s`` of its expiry) one caller renews it in passing while the others keep using
  the old one; only when there is no usable token at all do callers wait.
- :meth:`TokenManager.renew_after_rejection` is for a 401: it deletes the cached token only if it is
  still the one that failed (compare-and-delete in Lua), then gets a new one. However many callers
  see the same 401 at once, one of them calls the token endpoint (under the ``keys.token_lock``
  lock); the others poll the cache until the new token is there.
- :meth:`TokenManager.refresh_if_due` is for the scheduler: renew ahead of expiry, say whether it did.

The fetch function (see :mod:`worker.adapters.token_endpoints`) runs only while the lock is held, so
a single-use refresh token is never spent twice; a rotated refresh token it returns is stored in the
same transaction as the new access token (with its chain's origin, see :mod:`worker.adapters.refresh_tokens`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import redis

from worker import keys
from worker.adapters.refresh_tokens import StoredRefreshToken
from worker.errors import ProviderError, TransientProviderError
from worker.logs import get_logger, register_secret

log = get_logger(__name__)

#: How often a caller waiting for another worker's renewal looks at the cache.
TOKEN_WAIT_POLL_S: Final = 0.05
#: A token this close to its expiry is not used any more (capped at a tenth of its lifetime).
TOKEN_EXPIRY_SLACK_S: Final = 30.0
#: The renewal lock outlives the token call by this much (gate wait, Redis round trips).
TOKEN_LOCK_EXTRA_S: Final = 20.0

# KEYS[1] token cache; ARGV[1] the token that failed. Deletes the cache only if it still holds it.
_DELETE_IF_TOKEN: Final = """
local cached = redis.call('GET', KEYS[1])
if not cached then return 0 end
local ok, entry = pcall(cjson.decode, cached)
if not ok or type(entry) ~= 'table' or entry['access_token'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1] lock; ARGV[1] owner. Releases the lock only if this caller still holds it.
_RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """An access token and when it stops working (epoch seconds)."""

    access_token: str
    issued_at: float
    expires_at: float
    #: A rotated refresh token that came with it (stored separately, never in the cache entry).
    refresh_token: str | None = None
    #: Fingerprint of the configured refresh token its chain began with (``refresh_tokens.fingerprint``).
    refresh_origin: str | None = None

    @property
    def lifetime_s(self) -> float:
        return max(self.expires_at - self.issued_at, 0.0)

    def usable(self, now: float) -> bool:
        """Still good for a call that may take a while."""
        return now < self.expires_at - min(TOKEN_EXPIRY_SLACK_S, self.lifetime_s / 10)

    def due(self, now: float, margin_s: float) -> bool:
        """Time to renew: within ``margin_s`` of expiry (at most half the lifetime, for short tokens)."""
        return now >= self.expires_at - min(margin_s, self.lifetime_s / 2)

    def cache_text(self) -> str:
        entry = {
            "access_token": self.access_token,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }
        return json.dumps(entry)

    @classmethod
    def from_cache(cls, text: str | bytes | None) -> IssuedToken | None:
        if text is None:
            return None
        try:
            entry = json.loads(text)
            return cls(str(entry["access_token"]), float(entry["issued_at"]), float(entry["expires_at"]))
        except (ValueError, TypeError, KeyError):
            return None


Fetch = Callable[[], IssuedToken]
Acceptable = Callable[[IssuedToken, float], bool]


class TokenManager:
    """One connection's access token, shared through Redis by every worker."""

    def __init__(
        self,
        *,
        connection: str,
        client: redis.Redis,
        fetch: Fetch,
        refresh_margin_s: float,
        lock_ttl_s: float,
        clock: Callable[[], float] = time.time,
        poll_s: float = TOKEN_WAIT_POLL_S,
    ) -> None:
        self.connection = connection
        self._redis = client
        self._fetch = fetch
        self._margin_s = refresh_margin_s
        self._lock_ttl_ms = max(int(lock_ttl_s * 1000), 1)
        self._clock = clock
        self._poll_s = poll_s
        self._cache_key = keys.token(connection)
        self._lock_key = keys.token_lock(connection)
        self._delete_if_token = client.register_script(_DELETE_IF_TOKEN)
        self._release_lock = client.register_script(_RELEASE_LOCK)

    def cached(self) -> IssuedToken | None:
        """The token in the cache, if any (expired ones vanish with their Redis expiry)."""
        entry = IssuedToken.from_cache(self._redis.get(self._cache_key))
        if entry is not None:
            register_secret(entry.access_token)
        return entry

    def token(self) -> str:
        """A token for a call now. Raises ``ProviderError`` subclasses when none can be had."""
        entry, now = self.cached(), self._clock()
        if entry is not None and entry.usable(now):
            if entry.due(now, self._margin_s):
                return self._renew_in_passing(entry)
            return entry.access_token
        return self._obtain(self._fresh)

    def renew_after_rejection(self, rejected: str) -> str:
        """The provider refused ``rejected`` (401): replace exactly that token, once for all callers."""
        self._delete_if_token(keys=[self._cache_key], args=[rejected])
        return self._obtain(lambda entry, now: entry.access_token != rejected and entry.usable(now))

    def refresh_if_due(self) -> bool:
        """Renew the token if it is due or missing; False when not due or another worker is at it."""
        entry = self.cached()
        if entry is not None and not entry.due(self._clock(), self._margin_s):
            return False
        owner = self._try_lock()
        if owner is None:
            return False
        try:
            current = self.cached()
            if current is not None and self._fresh(current, self._clock()):
                return False
            self._fetch_and_store()
            return True
        finally:
            self._unlock(owner)

    def _fresh(self, entry: IssuedToken, now: float) -> bool:
        return entry.usable(now) and not entry.due(now, self._margin_s)

    def _renew_in_passing(self, entry: IssuedToken) -> str:
        """Renew a due but usable token if nobody else is; a failure keeps the old one in use."""
        owner = self._try_lock()
        if owner is None:
            return entry.access_token
        try:
            current = self.cached()
            if current is not None and self._fresh(current, self._clock()):
                return current.access_token
            return self._fetch_and_store().access_token
        except ProviderError as exc:
            log.warning(
                "early renewal of the access token failed; the current one stays in use", error=str(exc)
            )
            return entry.access_token
        finally:
            self._unlock(owner)

    def _obtain(self, acceptable: Acceptable) -> str:
        """Wait for an acceptable token in the cache, renewing it ourselves when nobody else is."""
        deadline = time.monotonic() + self._lock_ttl_ms / 1000 + self._poll_s
        while True:
            entry = self.cached()
            if entry is not None and acceptable(entry, self._clock()):
                return entry.access_token
            owner = self._try_lock()
            if owner is not None:
                try:
                    return self._renew_locked(acceptable)
                finally:
                    self._unlock(owner)
            if time.monotonic() > deadline:
                raise TransientProviderError(
                    f"{self.connection}: another worker's renewal of the access token did not finish in time"
                )
            time.sleep(self._poll_s)

    def _renew_locked(self, acceptable: Acceptable) -> str:
        # Another worker may have stored a token between our look and taking the lock.
        entry = self.cached()
        if entry is not None and acceptable(entry, self._clock()):
            return entry.access_token
        return self._fetch_and_store().access_token

    def _fetch_and_store(self) -> IssuedToken:
        issued = self._fetch()
        register_secret(issued.access_token)
        register_secret(issued.refresh_token)
        ttl_ms = int((issued.expires_at - self._clock()) * 1000)
        with self._redis.pipeline(transaction=True) as pipe:
            if issued.refresh_token:
                stored = StoredRefreshToken(issued.refresh_token, issued.refresh_origin)
                pipe.set(keys.refresh_token(self.connection), stored.text())
            if ttl_ms > 0:
                pipe.set(self._cache_key, issued.cache_text(), px=ttl_ms)
            else:
                pipe.delete(self._cache_key)
            pipe.execute()
        log.info(
            "renewed the shared access token",
            expires_in_s=round(issued.expires_at - issued.issued_at),
            refresh_token_rotated=issued.refresh_token is not None,
        )
        return issued

    def _try_lock(self) -> str | None:
        owner = uuid.uuid4().hex
        return owner if self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ttl_ms) else None

    def _unlock(self, owner: str) -> None:
        self._release_lock(keys=[self._lock_key], args=[owner])

"""Which refresh token a connection with rotating refresh tokens spends next.

Constant Contact may rotate refresh tokens: each refresh answers with the next one and retires the
one spent, so the settings' ``refresh_token`` only bootstraps the chain. The worker keeps the
latest token of the chain in Redis (``keys.refresh_token``) together with the SHA-256 of the
configured token the chain started from (never the token itself):

- while the settings still hold that token, the stored one wins: the configured one was spent long
  ago and the provider would answer ``invalid_grant``;
- once the settings hold another token, that one wins: an operator re-authorised the connection
  (a new consent, possibly for another account) and configured the new grant's refresh token. The
  old chain may still be alive, so waiting for it to fail would keep using the old grant forever.
  The next refresh spends the configured token and stores its successor under the new fingerprint.

A stored value without a fingerprint (written before fingerprints were kept) still wins, as it did.
A refused refresh token is never followed by a second try with another one: on a real provider the
configured token of the same chain is spent too, so that try would only burn a token request.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final

import redis

from worker import keys
from worker.logs import get_logger

log = get_logger(__name__)

#: JSON fields of a stored refresh token.
TOKEN_FIELD: Final = "refresh_token"
ORIGIN_FIELD: Final = "configured_sha256"


def fingerprint(configured: str) -> str:
    """Names a configured refresh token in Redis without storing it (tokens are long and random)."""
    return hashlib.sha256(configured.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredRefreshToken:
    """The latest refresh token of a connection's chain, and the configured token the chain began with."""

    token: str
    #: :func:`fingerprint` of the configured token; None for a value stored before it was kept.
    origin: str | None = None

    def text(self) -> str:
        """What ``keys.refresh_token`` holds: JSON, or the bare token when its origin is unknown."""
        if self.origin is None:
            return self.token
        return json.dumps({TOKEN_FIELD: self.token, ORIGIN_FIELD: self.origin})

    @classmethod
    def parse(cls, raw: str | bytes | None) -> StoredRefreshToken | None:
        if not raw:
            return None
        value = raw.decode() if isinstance(raw, bytes) else raw
        try:
            entry = json.loads(value)
        except ValueError:
            return cls(value)
        token = entry.get(TOKEN_FIELD) if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token:
            return cls(value)
        origin = entry.get(ORIGIN_FIELD)
        return cls(token, origin if isinstance(origin, str) else None)

    def descends_from(self, configured: str) -> bool:
        """True unless the settings now hold another token than the one this chain began with."""
        return self.origin is None or self.origin == fingerprint(configured)


def read_stored(client: redis.Redis, connection: str) -> StoredRefreshToken | None:
    """The connection's stored refresh token, if a refresh has stored one."""
    return StoredRefreshToken.parse(client.get(keys.refresh_token(connection)))


def token_to_spend(stored: StoredRefreshToken | None, configured: str) -> str:
    """The stored token while it descends from ``configured``; otherwise ``configured`` itself."""
    if stored is None:
        return configured
    if stored.descends_from(configured):
        return stored.token
    log.info(
        "the configured refresh token changed since the stored one was issued; spending the configured one"
    )
    return configured

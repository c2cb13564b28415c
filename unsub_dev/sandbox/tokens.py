"""Access tokens of the Constant Contact fakes: signed JWTs that really expire.

A token is valid while the store knows it and its expiry (sandbox clock) is ahead. Expiring all
tokens at once (``POST /_sandbox/tokens/expire``) is the "JWT expired mid-run" scenario.

Rotated refresh tokens are different: :class:`RefreshTokenSigner` signs them with a key derived
from the OAuth clients of the config, so a sandbox restarted with the same config knows the ones an
earlier run issued, as the real provider still knows them after our processes restart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable
from typing import Any, Final

#: Signing key of this sandbox process (tokens do not survive a restart, as they would not in production).
_SIGNING_KEY = secrets.token_bytes(32)


#: Prefix of the refresh tokens the sandbox issues (the seed's are ``sandbox-refresh-<n>``).
REFRESH_PREFIX: Final = "sandbox-refresh-"
#: Random part and signature of an issued refresh token, in hex characters.
REFRESH_NONCE_HEX: Final = 16
REFRESH_SIGNATURE_HEX: Final = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any]) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "sandbox"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    signature = hmac.new(_SIGNING_KEY, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(signature)}"


def basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """``(client_id, secret)`` of an ``Authorization: Basic ...`` header."""
    if not authorization or not authorization.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    return (client_id, secret) if colon else None


def bearer(authorization: str | None) -> str | None:
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return authorization[7:].strip() or None


class TokenStore:
    """Issued access tokens and their expiry times."""

    def __init__(self) -> None:
        self.expiry: dict[str, float] = {}
        self.issued = 0

    def issue(self, *, subject: str, scope: str, ttl_s: float, now: float, audience: str) -> str:
        self.issued += 1
        token = make_jwt(
            {
                "sub": subject,
                "client_id": subject,
                "aud": audience,
                "scope": scope,
                "token_use": "access",
                "iat": int(now),
                "exp": int(now + ttl_s),
                "jti": secrets.token_hex(8),
            }
        )
        self.expiry[token] = now + ttl_s
        return token

    def valid(self, token: str | None, now: float) -> bool:
        if token is None:
            return False
        expiry = self.expiry.get(token)
        return expiry is not None and now < expiry

    def expire_all(self, now: float) -> int:
        live = [t for t, e in self.expiry.items() if e > now]
        for token in live:
            self.expiry[token] = now
        return len(live)

    def snapshot(self, now: float) -> dict[str, int]:
        return {"issued": self.issued, "live": sum(1 for e in self.expiry.values() if e > now)}


class RefreshTokenSigner:
    """Issues ``sandbox-refresh-<nonce>-<signature>``; knows those any run of the same config issued."""

    def __init__(self, clients: Iterable[tuple[str, str]]) -> None:
        material = json.dumps(sorted(clients)).encode()
        self._key = hashlib.sha256(b"unsub sandbox refresh tokens\0" + material).digest()

    def _signature(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()[:REFRESH_SIGNATURE_HEX]

    def issue(self) -> str:
        nonce = secrets.token_hex(REFRESH_NONCE_HEX // 2)
        return f"{REFRESH_PREFIX}{nonce}-{self._signature(nonce)}"

    def issued(self, token: str) -> bool:
        """True for a token this signer (in this run or an earlier one) issued."""
        nonce, dash, signature = token.removeprefix(REFRESH_PREFIX).partition("-")
        if not token.startswith(REFRESH_PREFIX) or not dash or len(nonce) != REFRESH_NONCE_HEX:
            return False
        return hmac.compare_digest(signature, self._signature(nonce))

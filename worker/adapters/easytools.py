"""easy.tools email API v1: account-wide unsubscribe of one contact by UUID.

The contact's UUID comes from the record (``contact_id``), else from this connection's cache in
Redis (``keys.contact_cache``: a hash keyed by the SHA-256 of the address, so no address is stored),
else from ``GET {base_url}/contacts?search=<email>`` (an exact match on a valid address). Then
``POST {base_url}/contacts/{uuid}/unsubscribe`` with no body; it is idempotent. A cached UUID the
provider no longer knows (404) is forgotten and looked up once more. The cache's lifetime starts
again with each UUID it learns, so under steady traffic it would never expire: past
:data:`CONTACT_CACHE_MAX_ENTRIES` it is dropped whole and fills again (losing it only costs lookups).

The records of a batch are worked ``parallel_calls`` at a time (:mod:`worker.adapters.parallel`).
"""

from __future__ import annotations

import hashlib
from typing import Final, Literal
from urllib.parse import quote

import redis
from pydantic import SecretStr

from producer.contract import UnsubscribeRequest
from worker import keys
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import STANDARD_CLASSES, TRANSIENT, Verdict, status_table
from worker.adapters.common import CONTACT_NOT_FOUND
from worker.adapters.http import Reply
from worker.adapters.parallel import OneRecordConnection, OneRecordHttpAdapter
from worker.connection import RateLimitText
from worker.providers import Provider
from worker.records import DeliveryRecord, TargetKind, make_target
from worker.redis_client import text


class EasyToolsConnection(OneRecordConnection):
    """easy.tools email API v1: account-wide unsubscribe of one contact by UUID."""

    type: Literal["easytools"]
    token: SecretStr
    rate_limit: RateLimitText = "100/minute"


UNSUBSCRIBE: Final = "unsubscribe"
FIND_CONTACT: Final = "find_contact"
SEARCH_PAGE_SIZE: Final = 100
#: Cached UUIDs are forgotten after this long without a new lookup.
CONTACT_CACHE_TTL_S: Final = 30 * 24 * 3600
#: The cache of one connection is dropped when it holds more UUIDs than this (about 130 bytes each).
CONTACT_CACHE_MAX_ENTRIES: Final = 100_000

#: POST /contacts/{uuid}/unsubscribe.
UNSUBSCRIBE_TABLE: Final = status_table(
    {
        **TRANSIENT,
        400: Verdict.REJECTED,
        401: Verdict.REAUTH,  # static bearer token refused: nothing to renew
        # The token was accepted (else 401) but this contact may not be changed (easy.tools' own
        # example: "managed by Easycart"): it is about the record, not the credentials.
        403: Verdict.REJECTED,
        404: Verdict.NOT_FOUND,  # RESOURCE_NOT_FOUND: no contact with that UUID
        422: Verdict.REJECTED,  # VALIDATION_ERROR
    },
    STANDARD_CLASSES,
)
#: GET /contacts?search=: a 404 here means the URL is wrong, not that the contact is missing.
SEARCH_TABLE: Final = status_table(
    {**TRANSIENT, 400: Verdict.REJECTED, 401: Verdict.REAUTH, 403: Verdict.REAUTH, 422: Verdict.REJECTED},
    STANDARD_CLASSES,
)


def email_field(email: str) -> str:
    """The cache's field for an address (its SHA-256: addresses are not stored in Redis)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class EasyToolsAdapter(OneRecordHttpAdapter):
    provider = "easytools"
    provider_max_batch = 1

    def __init__(self, conn: EasyToolsConnection, deps: AdapterDeps) -> None:
        token = conn.token.get_secret_value()
        super().__init__(
            conn,
            deps,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            secrets=[token],
        )
        self.base = str(conn.base_url).rstrip("/")
        self.cache_key = keys.contact_cache(conn.name)

    def _deliver_one(self, record: DeliveryRecord) -> Outcome:
        if record.contact_id:
            return self._unsubscribe(record.contact_id)
        cached = self.deps.redis.hget(self.cache_key, email_field(record.email))
        if cached:
            outcome = self._unsubscribe(text(cached))
            if outcome.reason != CONTACT_NOT_FOUND:
                return outcome
            self.deps.redis.hdel(self.cache_key, email_field(record.email))
        found = self._find(record.email)
        return found if isinstance(found, Outcome) else self._unsubscribe(found)

    def _unsubscribe(self, contact_uuid: str) -> Outcome:
        url = f"{self.base}/contacts/{quote(contact_uuid, safe='')}/unsubscribe"
        reply = self.caller.send(UNSUBSCRIBE, self.client.build_request("POST", url))
        if isinstance(reply, Outcome):
            return reply
        return self.judge_one(reply, UNSUBSCRIBE_TABLE(reply.status), UNSUBSCRIBE)

    def _find(self, email: str) -> str | Outcome:
        """The contact's UUID (cached for next time), or the outcome of not finding it."""
        params = {"search": email, "per_page": str(SEARCH_PAGE_SIZE)}
        request = self.client.build_request("GET", f"{self.base}/contacts", params=params)
        reply = self.caller.send(FIND_CONTACT, request)
        if isinstance(reply, Outcome):
            return reply
        verdict = SEARCH_TABLE(reply.status)
        if verdict is not Verdict.DELIVERED:
            return self.judge_one(reply, verdict, FIND_CONTACT)
        contact_uuid = _exact_match(reply, email)
        if contact_uuid is None:
            return Outcome.dead(CONTACT_NOT_FOUND, "easytools has no contact with this address")
        remember_contact(self.deps.redis, self.cache_key, email, contact_uuid)
        return contact_uuid


def remember_contact(client: redis.Redis, cache_key: str, email: str, contact_uuid: str) -> None:
    """Cache the contact's UUID; drop the whole cache once it holds more than the cap."""
    with client.pipeline(transaction=True) as pipe:
        pipe.hset(cache_key, email_field(email), contact_uuid)
        pipe.hlen(cache_key)
        pipe.expire(cache_key, CONTACT_CACHE_TTL_S)
        entries = int(pipe.execute()[1])
    if entries > CONTACT_CACHE_MAX_ENTRIES:
        client.unlink(cache_key)  # freed in the background: a full cache is megabytes


def _exact_match(reply: Reply, email: str) -> str | None:
    body = reply.json()
    contacts = body.get("data") if isinstance(body, dict) else None
    wanted = email.strip().lower()
    for contact in contacts if isinstance(contacts, list) else []:
        if not isinstance(contact, dict):
            continue
        address, contact_uuid = contact.get("email"), contact.get("uuid")
        if isinstance(address, str) and address.strip().lower() == wanted and isinstance(contact_uuid, str):
            return contact_uuid
    return None


def targets(request: UnsubscribeRequest, conn: EasyToolsConnection) -> list[str]:
    """easy.tools' only opt-out is account-wide, whatever the scope."""
    return [make_target(TargetKind.ACCOUNT)]


PROVIDER: Final = Provider(
    type="easytools", connection=EasyToolsConnection, adapter=EasyToolsAdapter, targets=targets
)

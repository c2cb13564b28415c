"""Constant Contact v3 contacts API: unsubscribe one contact with a PUT of the whole contact.

Two calls a contact:

1. Read the whole contact: ``GET {base_url}/contacts?email=<addr>&status=all&include=...`` (an exact
   match on the address; ``status=all`` finds unsubscribed and deleted contacts too; ``include``
   names every sub-resource a PUT could touch, so the search answers with the contact as a
   ``GET /contacts/{id}?include=...`` would: both return ``ContactResource``). When the record
   carries a ``contact_id``, ``GET {base_url}/contacts/{id}?include=...`` instead.
2. ``PUT {base_url}/contacts/{id}`` with the same contact, ``email_address.permission_to_send =
   "unsubscribed"``, ``email_address.opt_out_reason`` and ``update_source``.

A PUT overwrites every property it omits with null, so the body carries back every writable
property the read returned (names, job title, company, birthday, anniversary) and the sub-resources
in their PUT shapes. ``sms_channel`` is never sent: a PUT that names it is an SMS consent action.
A contact that is already unsubscribed is left alone (its original opt-out stays the evidence).

The records of a batch are worked ``parallel_calls`` at a time (:mod:`worker.adapters.parallel`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, Literal
from urllib.parse import quote

import httpx
from pydantic import Field, SecretStr

from producer.contract import Source, UnsubscribeRequest
from worker.adapters.auth import Fetch
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import STANDARD_CLASSES, TRANSIENT, StatusTable, Verdict, status_table
from worker.adapters.common import CONTACT_NOT_FOUND, send_with_token
from worker.adapters.http import Reply
from worker.adapters.parallel import OneRecordConnection, OneRecordHttpAdapter
from worker.adapters.token_endpoints import (
    CONTACTS_TOKEN_LIFETIME_S,
    TokenEndpoint,
    rotating_refresh_fetch,
    token_manager,
)
from worker.connection import DAY_S, HOUR_S, EndpointUrl, RateLimitText
from worker.providers import Provider
from worker.reasons import RetryCause
from worker.records import DeliveryRecord, TargetKind, make_target


class CcContactsConnection(OneRecordConnection):
    """Constant Contact v3 contacts API with an OAuth2 user token (24 h) and a refresh token."""

    type: Literal["cc_contacts"]
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    token_url: EndpointUrl
    #: First refresh token; rotated ones are stored in Redis and take precedence.
    refresh_token: SecretStr
    rate_limit: RateLimitText = "4/second;10000/day"
    token_refresh_margin_s: float = Field(default=HOUR_S, ge=0, le=DAY_S)


FIND_CONTACT: Final = "find_contact"
GET_CONTACT: Final = "get_contact"
PUT_CONTACT: Final = "put_contact"
UNSUBSCRIBED: Final = "unsubscribed"
OPT_OUT_REASON_CHARS: Final = 255

#: GET /contacts?email=: a 404 on the collection means the URL is wrong, not a missing contact.
SEARCH_TABLE: Final = status_table(
    {
        **TRANSIENT,
        400: Verdict.REJECTED,
        401: Verdict.RENEW_TOKEN,
        403: Verdict.REAUTH,  # missing contact_data scope or contacts:read privilege
        404: Verdict.REAUTH,
    },
    STANDARD_CLASSES,
)
#: GET and PUT /contacts/{contact_id}.
CONTACT_TABLE: Final = status_table(
    {
        **TRANSIENT,  # 409 on PUT: a concurrent update; try again
        400: Verdict.REJECTED,
        401: Verdict.RENEW_TOKEN,
        403: Verdict.REAUTH,  # missing contact_data scope or contacts:write privilege
        404: Verdict.NOT_FOUND,
        422: Verdict.REJECTED,
    },
    STANDARD_CLASSES,
)

#: Sub-resources read with the contact (on the search or the GET), so that the PUT carries them back.
INCLUDE: Final = "custom_fields,list_memberships,phone_numbers,street_addresses,taggings,notes"
#: Writable top-level properties of ``ContactPutRequest`` (besides email_address and update_source).
PUT_PROPERTIES: Final = (
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "birthday_month",
    "birthday_day",
    "anniversary",
)
#: Sub-resources and the fields of their PUT shapes (None: a list of ids, sent as it is).
PUT_SUBRESOURCES: Final[Mapping[str, tuple[str, ...] | None]] = {
    "custom_fields": ("custom_field_id", "value", "choice_ids"),
    "phone_numbers": ("phone_number", "kind"),
    "street_addresses": ("kind", "street", "city", "state", "postal_code", "country"),
    "list_memberships": None,
    "taggings": None,
    "notes": ("note_id", "created_at", "content"),
}
#: Fields of ``EmailAddressPut`` carried back as the GET showed them (a PUT would null them);
#: the opt-out fields are the ones this PUT sets, and the provider stamps the opt-out date and source.
EMAIL_KEPT_FIELDS: Final = ("address", "created_at", "opt_in_date", "confirm_status")
#: The PUT accepts Contact or Account only; a system-initiated opt-out is the account's.
UPDATE_SOURCE: Final[Mapping[Source, str]] = {
    Source.CONTACT: "Contact",
    Source.ACCOUNT: "Account",
    Source.SYSTEM: "Account",
}

Send = Callable[[str], Reply | Outcome]


class CcContactsAdapter(OneRecordHttpAdapter):
    provider = "cc_contacts"
    provider_max_batch = 1

    def __init__(self, conn: CcContactsConnection, deps: AdapterDeps) -> None:
        super().__init__(
            conn,
            deps,
            headers={"Accept": "application/json"},
            secrets=[conn.client_secret.get_secret_value(), conn.refresh_token.get_secret_value()],
        )
        self.tokens = token_manager(conn, self.deps, self.client, contacts_fetch)
        self.base = str(conn.base_url).rstrip("/")

    def _deliver_one(self, record: DeliveryRecord) -> Outcome:
        if record.contact_id:
            contact_id: str = record.contact_id
            contact = self._get(contact_id)
        else:
            found = self._find(record.email)
            if isinstance(found, Outcome):
                return found
            contact_id, contact = found
        if isinstance(contact, Outcome):
            return contact
        if _email_of(contact).get("permission_to_send") == UNSUBSCRIBED:
            return Outcome.delivered(status=200)
        return self._put(contact_id, unsubscribed_contact(contact, record))

    def _find(self, email: str) -> tuple[str, dict[str, Any]] | Outcome:
        """The contact of this address, whole (sub-resources included), and its id."""
        params = {"email": email, "status": "all", "include": INCLUDE}
        reply = self._call(FIND_CONTACT, SEARCH_TABLE, "GET", f"{self.base}/contacts", params=params)
        if isinstance(reply, Outcome):
            return reply
        body = reply.json()
        contacts = body.get("contacts") if isinstance(body, dict) else None
        for contact in contacts if isinstance(contacts, list) else []:
            if isinstance(contact, dict) and _same_address(_email_of(contact).get("address"), email):
                contact_id = contact.get("contact_id")
                if isinstance(contact_id, str) and contact_id:
                    return contact_id, contact
        return Outcome.dead(CONTACT_NOT_FOUND, "cc_contacts has no contact with this address")

    def _get(self, contact_id: str) -> dict[str, Any] | Outcome:
        url = f"{self.base}/contacts/{quote(contact_id, safe='')}"
        reply = self._call(GET_CONTACT, CONTACT_TABLE, "GET", url, params={"include": INCLUDE})
        if isinstance(reply, Outcome):
            return reply
        body = reply.json()
        if not isinstance(body, dict):
            return Outcome.retry(
                RetryCause.UNEXPECTED_RESPONSE, "cc_contacts get_contact answered something not JSON"
            )
        return body

    def _put(self, contact_id: str, body: dict[str, Any]) -> Outcome:
        url = f"{self.base}/contacts/{quote(contact_id, safe='')}"
        reply = self._call(PUT_CONTACT, CONTACT_TABLE, "PUT", url, json=body)
        return reply if isinstance(reply, Outcome) else Outcome.delivered(status=reply.status)

    def _call(
        self, operation: str, table: StatusTable, method: str, url: str, **options: Any
    ) -> Reply | Outcome:
        """One request with the shared token; a reply only when it is a success."""

        def send(token: str) -> Reply | Outcome:
            headers = {"Authorization": f"Bearer {token}"}
            return self.caller.send(
                operation, self.client.build_request(method, url, headers=headers, **options)
            )

        reply = send_with_token(self.provider, self.tokens, table, send)
        if isinstance(reply, Outcome):
            return reply
        verdict = table(reply.status)
        return reply if verdict is Verdict.DELIVERED else self.judge_one(reply, verdict, operation)


def unsubscribed_contact(contact: Mapping[str, Any], record: DeliveryRecord) -> dict[str, Any]:
    """The PUT body: the contact as it is, with its email address unsubscribed."""
    body: dict[str, Any] = {name: contact[name] for name in PUT_PROPERTIES if name in contact}
    for name, fields in PUT_SUBRESOURCES.items():
        items = contact.get(name)
        if isinstance(items, list):
            body[name] = items if fields is None else [_pick(item, fields) for item in items]
    current = _email_of(contact)
    email: dict[str, Any] = {
        **{name: current[name] for name in EMAIL_KEPT_FIELDS if current.get(name) is not None},
        "address": current.get("address") or record.email,
        "permission_to_send": UNSUBSCRIBED,
    }
    if record.reason:
        # Left out without a reason: an explicit null is not a string and CC's schema says string.
        email["opt_out_reason"] = record.reason[:OPT_OUT_REASON_CHARS]
    body["email_address"] = email
    body["update_source"] = UPDATE_SOURCE[record.source]
    return body


def _pick(item: Any, fields: tuple[str, ...]) -> Any:
    return {k: item[k] for k in fields if k in item} if isinstance(item, dict) else item


def _email_of(contact: Mapping[str, Any]) -> dict[str, Any]:
    email = contact.get("email_address")
    return email if isinstance(email, dict) else {}


def _same_address(found: Any, wanted: str) -> bool:
    return isinstance(found, str) and found.strip().lower() == wanted.strip().lower()


def targets(request: UnsubscribeRequest, conn: CcContactsConnection) -> list[str]:
    """The contact's only opt-out is account-wide, whatever the scope."""
    return [make_target(TargetKind.ACCOUNT)]


def contacts_fetch(conn: CcContactsConnection, client: httpx.Client, deps: AdapterDeps) -> Fetch:
    endpoint = TokenEndpoint.of(conn, client, deps, default_lifetime_s=CONTACTS_TOKEN_LIFETIME_S)

    return rotating_refresh_fetch(
        endpoint, deps.redis, connection=conn.name, configured=conn.refresh_token.get_secret_value()
    )


PROVIDER: Final = Provider(
    type="cc_contacts",
    connection=CcContactsConnection,
    adapter=CcContactsAdapter,
    targets=targets,
    token_fetch=contacts_fetch,
)

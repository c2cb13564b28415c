"""Fake Constant Contact v3 contacts API: OAuth2 refresh-token grant, find, get and PUT contacts.

- ``POST /cc/oauth2/default/v1/token`` form ``grant_type=refresh_token&refresh_token=...`` with Basic
  client credentials. Rotating refresh tokens are single use: the answer carries the next one, signed,
  so a restarted sandbox of the same config accepts it too (the worker keeps it in Redis).
- ``GET /cc/v3/contacts?email=&status=&limit=&include=`` → ``{"contacts": [...]}``;
  ``GET /cc/v3/contacts/{contact_id}?include=``; ``PUT /cc/v3/contacts/{contact_id}``.
- A PUT overwrites every top-level property it leaves out with null (the state's ``data_loss``
  lists who lost what); sub-resources it leaves out are kept, as CC documents. Unsubscribing is
  ``email_address.permission_to_send = "unsubscribed"``: the opt-out source is the PUT's
  ``update_source``, and ``opt_out_reason`` is recorded. Answers omit null properties, as CC's do.
"""

from __future__ import annotations

import copy
import uuid
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from unsub_dev.sandbox.cc_common import (
    cc_error,
    cc_fault,
    form_fields,
    is_json,
    json_body,
    oauth_error,
)
from unsub_dev.sandbox.config import CcContactSeed, SandboxConfig
from unsub_dev.sandbox.faults import Fault
from unsub_dev.sandbox.provider import Provider
from unsub_dev.sandbox.state import TOKEN_OPERATION, is_email, norm
from unsub_dev.sandbox.tokens import RefreshTokenSigner, TokenStore, basic_credentials, bearer

FIND: Final = "find_contact"
GET: Final = "get_contact"
PUT: Final = "put_contact"
UNSUBSCRIBED: Final = "unsubscribed"
CONTACTS_SCOPE: Final = "contact_data offline_access"
LIMIT_DEFAULT: Final = 50
LIMIT_MAX: Final = 500
AUTO_NAMESPACE: Final = uuid.UUID("7b0c2b52-9c5e-4c55-8d0e-5a2d43f1c0de")
SUBRESOURCES: Final = (
    "custom_fields",
    "list_memberships",
    "phone_numbers",
    "street_addresses",
    "taggings",
    "notes",
)
#: Top-level properties a PUT sets to null when it leaves them out.
PUT_SCALARS: Final = (
    "first_name",
    "last_name",
    "job_title",
    "company_name",
    "birthday_month",
    "birthday_day",
    "anniversary",
)
NAME_MAX_CHARS: Final = 50
ADDRESS_MAX_CHARS: Final = 80
OPT_OUT_REASON_MAX_CHARS: Final = 255
STATUSES: Final = frozenset(
    {"all", "active", "deleted", "not_set", "pending_confirmation", "temp_hold", "unsubscribed"}
)
PUT_SOURCES: Final = ("Contact", "Account")


def contact_status(contact: dict[str, Any]) -> str:
    if contact.get("deleted_at"):
        return "deleted"
    permission = contact["email_address"].get("permission_to_send") or "not_set"
    return "active" if permission in ("explicit", "implicit") else str(permission)


def render(contact: dict[str, Any], include: set[str]) -> dict[str, Any]:
    """The contact as CC shows it: null properties left out, sub-resources only when included."""
    out = {k: v for k, v in contact.items() if v is not None and (k not in SUBRESOURCES or k in include)}
    out["email_address"] = {k: v for k, v in contact["email_address"].items() if v is not None}
    return out


class CcContacts(Provider):
    name = "cc_contacts"
    prefix = "/cc"

    def reset(self, config: SandboxConfig) -> None:
        section = config.cc_contacts
        self.clients = {c.client_id: c.client_secret for c in section.clients}
        self.refresh_tokens = set(section.refresh_tokens)
        self.spent_refresh_tokens: set[str] = set()  # a signed token of an earlier run: good until spent
        self.refresh_signer = RefreshTokenSigner((c.client_id, c.client_secret) for c in section.clients)
        self.rotate = section.rotate_refresh_tokens
        self.token_ttl_s = section.token_ttl_s
        self.tokens = TokenStore()
        self.contacts: dict[str, dict[str, Any]] = {}
        self.by_email: dict[str, str] = {}
        self.data_loss: list[dict[str, Any]] = []
        for seed in section.contacts:
            self.add(seed)

    def seed(self, data: dict[str, Any]) -> dict[str, int]:
        seeds = [CcContactSeed.model_validate(c) for c in data.get("contacts", [])]
        for seed in seeds:
            self.add(seed)
        tokens = set(data.get("refresh_tokens", [])) - self.refresh_tokens
        self.refresh_tokens |= tokens
        self.spent_refresh_tokens -= tokens
        return {"contacts": len(seeds), "refresh_tokens": len(tokens)}

    def add(self, seed: CcContactSeed) -> dict[str, Any]:
        now = self.core.clock.iso()
        extra = dict(seed.model_extra or {})
        email = seed.email.strip()
        contact_id = seed.contact_id or str(uuid.uuid5(AUTO_NAMESPACE, norm(email)))
        address: dict[str, Any] = {
            "address": email,
            "permission_to_send": seed.permission_to_send,
            "created_at": now,
            "updated_at": now,
            "opt_in_source": "Account",
            "opt_in_date": now,
            "confirm_status": "off",
        }
        if seed.permission_to_send == UNSUBSCRIBED:
            address["opt_out_source"] = extra.pop("opt_out_source", "Contact")
            address["opt_out_date"] = now
            address["opt_out_reason"] = extra.pop("opt_out_reason", None)
        contact: dict[str, Any] = {
            "contact_id": contact_id,
            "email_address": address,
            "create_source": "Account",
            "update_source": "Account",
            "created_at": now,
            "updated_at": now,
            **{name: [] for name in SUBRESOURCES},
            **extra,
        }
        self.contacts[contact_id] = contact
        self.by_email[norm(email)] = contact_id
        return contact

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/oauth2/default/v1/token", self.token_endpoint, methods=["POST"]),
            Route("/v3/contacts", self.find_endpoint, methods=["GET"]),
            Route("/v3/contacts/{contact_id}", self.get_endpoint, methods=["GET"]),
            Route("/v3/contacts/{contact_id}", self.put_endpoint, methods=["PUT"]),
        ]

    def error_response(self, fault: Fault) -> Response:
        return cc_fault(fault)

    def extra_state(self) -> dict[str, Any]:
        unsubscribed = [
            c["email_address"]["address"]
            for c in self.contacts.values()
            if c["email_address"].get("permission_to_send") == UNSUBSCRIBED
        ]
        return {
            "contacts": len(self.contacts),
            "tokens": self.tokens.snapshot(self.core.clock.now()),
            "token_ttl_s": self.current_ttl_s,
            "unsubscribed": sorted(unsubscribed),
            "data_loss": list(self.data_loss),
        }

    @property
    def current_ttl_s(self) -> float:
        return self.faults.settings.token_ttl_s or self.token_ttl_s

    def expire_tokens(self) -> int:
        return self.tokens.expire_all(self.core.clock.now())

    def contact(self, contact_id: str) -> dict[str, Any] | None:
        """A contact by id (a copy, for tests and the state endpoint)."""
        found = self.contacts.get(contact_id)
        return copy.deepcopy(found) if found is not None else None

    # -- token ----------------------------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        body = await request.body()
        return await self.serve(TOKEN_OPERATION, lambda: self._token(request, body))

    def _token(self, request: Request, body: bytes) -> Response:
        credentials = basic_credentials(request.headers.get("authorization"))
        if credentials is None or self.clients.get(credentials[0]) != credentials[1]:
            return oauth_error(401, "invalid_client", "Client authentication failed.")
        fields = form_fields(request, body)
        if fields.get("grant_type") != "refresh_token":
            return oauth_error(400, "unsupported_grant_type", "The grant type is not supported.")
        refresh = fields.get("refresh_token", "")
        if not self._grantable(refresh):
            return oauth_error(400, "invalid_grant", "The refresh token is invalid or expired.")
        if self.rotate:
            self.refresh_tokens.discard(refresh)
            self.spent_refresh_tokens.add(refresh)
            refresh = self.refresh_signer.issue()
        ttl_s = self.current_ttl_s
        token = self.tokens.issue(
            subject=credentials[0],
            scope=CONTACTS_SCOPE,
            ttl_s=ttl_s,
            now=self.core.clock.now(),
            audience="contacts",
        )
        body_out = {
            "token_type": "Bearer",
            "expires_in": int(ttl_s),
            "access_token": token,
            "scope": CONTACTS_SCOPE,
            "refresh_token": refresh,
        }
        return JSONResponse(body_out, headers={"Cache-Control": "no-store"})

    def _grantable(self, refresh: str) -> bool:
        """Seeded, or issued by a sandbox of this config (this run or an earlier one), and not spent here."""
        if refresh in self.spent_refresh_tokens:
            return False
        return refresh in self.refresh_tokens or self.refresh_signer.issued(refresh)

    # -- contacts -------------------------------------------------------------------------------

    def _authorized(self, request: Request) -> bool:
        return self.tokens.valid(bearer(request.headers.get("authorization")), self.core.clock.now())

    async def find_endpoint(self, request: Request) -> Response:
        return await self.serve(FIND, lambda: self._find(request))

    async def get_endpoint(self, request: Request) -> Response:
        return await self.serve(GET, lambda: self._get(request))

    async def put_endpoint(self, request: Request) -> Response:
        body = await request.body()
        return await self.serve(PUT, lambda: self._put(request, body))

    def _find(self, request: Request) -> Response:
        if not self._authorized(request):
            return cc_error(401)
        params = request.query_params
        include = parse_include(params.get("include"))
        statuses = {s.strip() for s in params.get("status", "").split(",") if s.strip()}
        limit = parse_limit(params.get("limit"))
        if include is None or limit is None or not statuses <= STATUSES:
            return cc_error(400, "include, status or limit does not have a valid value")
        offset = int(params["cursor"]) if params.get("cursor", "").isdigit() else 0
        email = params.get("email")
        if email is not None:
            found = self._lookup(email)
            candidates = [found] if found is not None else []
        else:
            candidates = list(self.contacts.values())
        matching = [c for c in candidates if status_matches(c, statuses)]
        page = matching[offset : offset + limit]
        body: dict[str, Any] = {"contacts": [render(c, include) for c in page]}
        if params.get("include_count") == "true":
            body["contacts_count"] = len(matching)
        if offset + limit < len(matching):
            rest = {k: v for k, v in params.items() if k != "cursor"}
            query = "&".join(f"{k}={v}" for k, v in {**rest, "cursor": str(offset + limit)}.items())
            body["_links"] = {"next": {"href": f"/v3/contacts?{query}"}}
        return JSONResponse(body)

    def _lookup(self, email: str) -> dict[str, Any] | None:
        contact_id = self.by_email.get(norm(email))
        if contact_id is not None:
            return self.contacts[contact_id]
        if self.core.auto_creates(email):
            local = email.split("@")[0]
            return self.add(CcContactSeed(email=email, first_name="Auto", last_name=local[:NAME_MAX_CHARS]))
        return None

    def _get(self, request: Request) -> Response:
        if not self._authorized(request):
            return cc_error(401)
        include = parse_include(request.query_params.get("include"))
        if include is None:
            return cc_error(400, "include does not have a valid value")
        contact = self.contacts.get(request.path_params["contact_id"])
        if contact is None:
            return cc_error(404, "The requested contact was not found.")
        return JSONResponse(render(contact, include))

    def _put(self, request: Request, raw: bytes) -> Response:
        if not self._authorized(request):
            return cc_error(401)
        contact = self.contacts.get(request.path_params["contact_id"])
        if contact is None:
            return cc_error(404, "The requested contact was not found.")
        if not is_json(request):
            return cc_error(415)
        body, problem = json_body(raw)
        problem = problem or validate_put(body)
        if problem is not None:
            return cc_error(400, problem)
        owner = self.by_email.get(norm(body["email_address"]["address"]))
        if owner is not None and owner != contact["contact_id"]:
            return cc_error(
                409, "The email address is already used by another contact.", key="contacts.api.conflict"
            )
        refused = resubscribe_refusal(contact, body)
        if refused is not None:
            return cc_error(400, refused)
        self._apply(contact, body)
        return JSONResponse(render(contact, set(SUBRESOURCES)))

    def _apply(self, contact: dict[str, Any], body: dict[str, Any]) -> None:
        now = self.core.clock.iso()
        nulled = [name for name in PUT_SCALARS if contact.get(name) is not None and body.get(name) is None]
        for name in PUT_SCALARS:
            contact[name] = body.get(name)
        for name in SUBRESOURCES:
            if name in body:
                contact[name] = body[name]
        old_email = contact["email_address"]
        new_email = body["email_address"]
        if norm(old_email["address"]) != norm(new_email["address"]):
            del self.by_email[norm(old_email["address"])]
            self.by_email[norm(new_email["address"])] = contact["contact_id"]
        was = old_email.get("permission_to_send")
        permission = new_email.get("permission_to_send") or was
        address = {**old_email, "address": new_email["address"], "permission_to_send": permission}
        address["updated_at"] = now
        if permission == UNSUBSCRIBED and was != UNSUBSCRIBED:
            address.update(opt_out_source=body["update_source"], opt_out_date=now)
            address["opt_out_reason"] = new_email.get("opt_out_reason")
            self.ledger.events.append(
                {
                    "contact_id": contact["contact_id"],
                    "email": norm(new_email["address"]),
                    "reason": new_email.get("opt_out_reason"),
                    "source": body["update_source"],
                    "at": now,
                }
            )
        elif permission != UNSUBSCRIBED:
            address.update(opt_out_source=None, opt_out_date=None, opt_out_reason=None)
        contact.update(email_address=address, update_source=body["update_source"], updated_at=now)
        contact["deleted_at"] = None  # a PUT revives a deleted contact
        if nulled:
            entry = {"contact_id": contact["contact_id"], "email": norm(address["address"]), "nulled": nulled}
            self.data_loss.append(entry)


def parse_include(value: str | None) -> set[str] | None:
    names = {n.strip() for n in (value or "").split(",") if n.strip()}
    return names if names <= set(SUBRESOURCES) else None


def parse_limit(value: str | None) -> int | None:
    if value is None:
        return LIMIT_DEFAULT
    return int(value) if value.isdigit() and 1 <= int(value) <= LIMIT_MAX else None


def status_matches(contact: dict[str, Any], statuses: set[str]) -> bool:
    status = contact_status(contact)
    if not statuses:
        return status != "deleted"
    return "all" in statuses or status in statuses


def validate_put(body: Any) -> str | None:
    """The first reason CC refuses this ContactPutRequest, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    if body.get("update_source") not in PUT_SOURCES:
        return "update_source is required and must be Contact or Account."
    email = body.get("email_address")
    if not isinstance(email, dict) or not is_email(email.get("address")):
        return "email_address.address is required and must be a valid email address."
    if len(email["address"]) > ADDRESS_MAX_CHARS:
        return f"email_address.address may be at most {ADDRESS_MAX_CHARS} characters."
    reason = email.get("opt_out_reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > OPT_OUT_REASON_MAX_CHARS):
        return (
            f"email_address.opt_out_reason must be a string of at most {OPT_OUT_REASON_MAX_CHARS} characters."
        )
    for name in ("first_name", "last_name", "job_title", "company_name"):
        value = body.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > NAME_MAX_CHARS):
            return f"{name} must be a string of at most {NAME_MAX_CHARS} characters."
    for name in SUBRESOURCES:
        if name in body and not isinstance(body[name], list):
            return f"{name} must be an array."
    return None


def resubscribe_refusal(contact: dict[str, Any], body: dict[str, Any]) -> str | None:
    """CC lets only the contact re-subscribe itself (``update_source=Contact``)."""
    was = contact["email_address"].get("permission_to_send")
    wanted = body["email_address"].get("permission_to_send")
    if was == UNSUBSCRIBED and wanted not in (None, UNSUBSCRIBED) and body["update_source"] != "Contact":
        return "Unsubscribed contacts cannot be re-subscribed with update_source Account."
    return None

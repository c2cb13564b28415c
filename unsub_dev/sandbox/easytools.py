"""Fake easy.tools email API v1: find contacts, unsubscribe one by UUID, 100 requests a minute.

- ``GET /easytools/api/v1/contacts?search=&page=&per_page=`` → ``{"data": [short contacts], "pagination"}``
  (a valid address is an exact match; anything else searches names and phone).
- ``GET /easytools/api/v1/contacts/{uuid}`` → ``{"data": full contact}``.
- ``POST /easytools/api/v1/contacts/{uuid}/unsubscribe`` (no body, idempotent) → the full contact.
- Bearer token; every answer carries ``X-RateLimit-Limit`` and ``X-RateLimit-Remaining``; over the
  limit: 429 ``RATE_LIMITED`` with ``Retry-After``.
"""

from __future__ import annotations

import uuid
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from unsub_dev.sandbox.config import EasyContactSeed, SandboxConfig
from unsub_dev.sandbox.faults import Fault, RateInfo
from unsub_dev.sandbox.provider import Provider
from unsub_dev.sandbox.state import is_email, norm
from unsub_dev.sandbox.tokens import bearer

FIND: Final = "find_contact"
GET: Final = "get_contact"
UNSUBSCRIBE: Final = "unsubscribe"
PER_PAGE_DEFAULT: Final = 100
PER_PAGE_MAX: Final = 100
SEARCH_MAX_CHARS: Final = 255
AUTO_NAMESPACE: Final = uuid.UUID("0f6c8a7e-1d2b-4e3f-9a5b-6c7d8e9f0a1b")
SHORT_FIELDS: Final = (
    "uuid",
    "email",
    "first_name",
    "last_name",
    "phone",
    "external_id",
    "language",
    "country_code",
    "created_at",
    "updated_at",
)
#: 401's code is not in the excerpts of easy.tools' documents: our wording.
ERRORS: Final = {
    401: ("UNAUTHENTICATED", "Unauthenticated."),
    429: ("RATE_LIMITED", "Too many requests. Please retry after 60 seconds."),
    500: ("INTERNAL_ERROR", "Internal server error."),
    502: ("BAD_GATEWAY", "Bad gateway."),
    503: ("SERVICE_UNAVAILABLE", "Service unavailable."),
    504: ("GATEWAY_TIMEOUT", "Gateway timeout."),
}


def error(code: int, name: str | None = None, message: str | None = None, **extra: Any) -> JSONResponse:
    default_name, default_message = ERRORS.get(code, ("ERROR", "Error."))
    body = {"error": {"code": name or default_name, "message": message or default_message, **extra}}
    return JSONResponse(body, status_code=code)


class EasyTools(Provider):
    name = "easytools"
    prefix = "/easytools"

    def default_rate_limit(self, config: SandboxConfig) -> int | None:
        return config.easytools.rate_limit_per_minute

    def reset(self, config: SandboxConfig) -> None:
        self.tokens = set(config.easytools.tokens)
        self.contacts: dict[str, dict[str, Any]] = {}
        self.by_email: dict[str, str] = {}
        for seed in config.easytools.contacts:
            self.add(seed)

    def seed(self, data: dict[str, Any]) -> dict[str, int]:
        seeds = [EasyContactSeed.model_validate(c) for c in data.get("contacts", [])]
        for seed in seeds:
            self.add(seed)
        tokens = set(data.get("tokens", [])) - self.tokens
        self.tokens |= tokens
        return {"contacts": len(seeds), "tokens": len(tokens)}

    def add(self, seed: EasyContactSeed) -> dict[str, Any]:
        now = self.core.clock.iso()
        contact_uuid = seed.uuid or str(uuid.uuid5(AUTO_NAMESPACE, norm(seed.email)))
        contact: dict[str, Any] = {
            "uuid": contact_uuid,
            "email": seed.email.strip(),
            "first_name": None,
            "last_name": None,
            "phone": None,
            "external_id": None,
            "language": "en",
            "country_code": None,
            "lists": [],
            "custom_fields": [],
            "status": "subscribed",
            "subscription": {"is_unsubscribed": False, "unsubscribed_at": None},
            "deliverability": {
                "is_suppressed": False,
                "suppressed_at": None,
                "is_bounced": False,
                "last_bounce_type": None,
                "last_bounced_at": None,
                "is_complained": False,
                "last_complained_at": None,
            },
            "engagement": {"last_sent_at": None, "last_opened_at": None, "last_clicked_at": None},
            "created_at": now,
            "updated_at": now,
            **(seed.model_extra or {}),
        }
        self.contacts[contact_uuid] = contact
        self.by_email[norm(seed.email)] = contact_uuid
        return contact

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/api/v1/contacts", self.find_endpoint, methods=["GET"]),
            Route("/api/v1/contacts/{uuid}", self.get_endpoint, methods=["GET"]),
            Route("/api/v1/contacts/{uuid}/unsubscribe", self.unsubscribe_endpoint, methods=["POST"]),
        ]

    def error_response(self, fault: Fault) -> Response:
        return error(fault.status)

    def rate_headers(self, response: Response, rate: RateInfo, fault: Fault | None) -> None:
        response.headers["X-RateLimit-Limit"] = str(rate.limit)
        response.headers["X-RateLimit-Remaining"] = str(max(0, rate.remaining))
        if fault is not None and fault.status == 429 and fault.retry_after_s is not None:
            response.headers["Retry-After"] = str(fault.retry_after_s)

    def extra_state(self) -> dict[str, Any]:
        unsubscribed = [c["email"] for c in self.contacts.values() if c["subscription"]["is_unsubscribed"]]
        return {"contacts": len(self.contacts), "unsubscribed": sorted(unsubscribed)}

    def _tenant(self, request: Request) -> str:
        return bearer(request.headers.get("authorization")) or "-"

    async def find_endpoint(self, request: Request) -> Response:
        return await self.serve(FIND, lambda: self._find(request), tenant=self._tenant(request))

    async def get_endpoint(self, request: Request) -> Response:
        return await self.serve(GET, lambda: self._get(request), tenant=self._tenant(request))

    async def unsubscribe_endpoint(self, request: Request) -> Response:
        return await self.serve(UNSUBSCRIBE, lambda: self._unsubscribe(request), tenant=self._tenant(request))

    def _authorized(self, request: Request) -> bool:
        return bearer(request.headers.get("authorization")) in self.tokens

    def _find(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401)
        params = request.query_params
        problems = page_problems(params.get("page", "1"), params.get("per_page", str(PER_PAGE_DEFAULT)))
        search = params.get("search", "")
        if len(search) > SEARCH_MAX_CHARS:
            problems["search"] = [f"The search may not be greater than {SEARCH_MAX_CHARS} characters."]
        if problems:
            return error(422, "VALIDATION_ERROR", "The given data was invalid", details=problems)
        page, per_page = int(params.get("page", "1")), int(params.get("per_page", str(PER_PAGE_DEFAULT)))
        found = self._search(search)
        shown = found[(page - 1) * per_page : page * per_page]
        body = {
            "data": [{k: c.get(k) for k in SHORT_FIELDS} for c in shown],
            "pagination": {"current_page": page, "per_page": per_page, "total": len(found)},
        }
        return JSONResponse(body)

    def _search(self, search: str) -> list[dict[str, Any]]:
        if is_email(search):
            contact_uuid = self.by_email.get(norm(search))
            if contact_uuid is not None:
                return [self.contacts[contact_uuid]]
            return [self.add(EasyContactSeed(email=search))] if self.core.auto_creates(search) else []
        needle = search.strip().lower()
        found = [
            c
            for c in self.contacts.values()
            if not needle
            or any(needle in str(c.get(k) or "").lower() for k in ("first_name", "last_name", "phone"))
            or needle in f"{c.get('first_name') or ''} {c.get('last_name') or ''}".lower()
        ]
        return sorted(found, key=lambda c: str(c["created_at"]), reverse=True)

    def _get(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401)
        contact = self.contacts.get(request.path_params["uuid"])
        if contact is None:
            return not_found(request.path_params["uuid"])
        return JSONResponse({"data": contact})

    def _unsubscribe(self, request: Request) -> Response:
        if not self._authorized(request):
            return error(401)
        contact_uuid = request.path_params["uuid"]
        contact = self.contacts.get(contact_uuid)
        if contact is None:
            return not_found(contact_uuid)
        if not contact["subscription"]["is_unsubscribed"]:
            now = self.core.clock.iso()
            contact.update(status="unsubscribed", updated_at=now)
            contact["subscription"] = {"is_unsubscribed": True, "unsubscribed_at": now}
            self.ledger.events.append({"uuid": contact_uuid, "email": norm(contact["email"]), "at": now})
        return JSONResponse({"data": contact})


def not_found(contact_uuid: str) -> JSONResponse:
    return error(404, "RESOURCE_NOT_FOUND", f"Contact with UUID '{contact_uuid}' not found")


def page_problems(page: str, per_page: str) -> dict[str, list[str]]:
    problems: dict[str, list[str]] = {}
    if not page.isdigit() or int(page) < 1:
        problems["page"] = ["The page must be at least 1."]
    if not per_page.isdigit() or not 1 <= int(per_page) <= PER_PAGE_MAX:
        problems["per_page"] = [f"The per page must be between 1 and {PER_PAGE_MAX}."]
    return problems

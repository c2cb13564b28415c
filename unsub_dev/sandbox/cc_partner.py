"""Fake Constant Contact technology-partner API: Cognito client-credentials JWT + bulk unsubscribe.

- ``POST /cc/oauth2/token?grant_type=client_credentials`` (or the grant in a form body), Basic
  ``client_id:client_secret``, form content type → ``{"access_token", "expires_in", "token_type"}``.
- ``POST /cc/v3/partner/accounts/{encoded_account_id}/contacts/unsubscribe`` with ``x-api-key`` and
  ``Authorization: Bearer <JWT>``; the body is validated as the official spec's schema (plus: no
  unknown properties, at least one address, well-formed addresses) → ``{"unsubscribed_count": N}``.
  Any address is accepted: CC unsubscribes it in the client account whether or not it was seeded.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from unsub_dev.sandbox.cc_common import (
    cc_error,
    cc_fault,
    form_fields,
    is_form,
    is_json,
    json_body,
    oauth_error,
)
from unsub_dev.sandbox.config import SandboxConfig
from unsub_dev.sandbox.faults import Fault
from unsub_dev.sandbox.provider import Provider
from unsub_dev.sandbox.state import TOKEN_OPERATION, is_email, norm
from unsub_dev.sandbox.tokens import TokenStore, basic_credentials, bearer

UNSUBSCRIBE: Final = "unsubscribe"
PARTNER_SCOPE: Final = "v3api/general.partner"
PARTNER_MAX_ADDRESSES: Final = 500
OPT_OUT_REASON_MAX_CHARS: Final = 255
UPDATE_SOURCES: Final = ("Account", "Contact", "System")
BODY_FIELDS: Final = frozenset(
    {"email_addresses", "update_source", "opt_out_reason", "delete_contacts", "global_unsubscribe"}
)
#: ``account`` of events and ``unsubscribed`` for a global unsubscribe (every client account).
ALL_ACCOUNTS: Final = "*"


class CcPartner(Provider):
    name = "cc_partner"
    prefix = "/cc"

    def reset(self, config: SandboxConfig) -> None:
        section = config.cc_partner
        self.clients = {c.client_id: c.client_secret for c in section.clients}
        self.api_keys = set(section.api_keys)
        self.accounts = list(section.accounts)
        self.token_ttl_s = section.token_ttl_s
        self.tokens = TokenStore()
        self.unsubscribed: dict[str, set[str]] = {}

    def seed(self, data: dict[str, Any]) -> dict[str, int]:
        accounts = [a for a in data.get("accounts", []) if a not in self.accounts]
        self.accounts += accounts
        keys = set(data.get("api_keys", [])) - self.api_keys
        self.api_keys |= keys
        clients = {c["client_id"]: c["client_secret"] for c in data.get("clients", [])}
        self.clients.update(clients)
        return {"accounts": len(accounts), "api_keys": len(keys), "clients": len(clients)}

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/oauth2/token", self.token_endpoint, methods=["POST"]),
            Route(
                "/v3/partner/accounts/{encoded_account_id}/contacts/unsubscribe",
                self.unsubscribe_endpoint,
                methods=["POST"],
            ),
        ]

    def error_response(self, fault: Fault) -> Response:
        return cc_fault(fault)

    def extra_state(self) -> dict[str, Any]:
        return {
            "accounts": list(self.accounts),
            "tokens": self.tokens.snapshot(self.core.clock.now()),
            "token_ttl_s": self.current_ttl_s,
            "unsubscribed": {acct: sorted(emails) for acct, emails in self.unsubscribed.items()},
        }

    @property
    def current_ttl_s(self) -> float:
        return self.faults.settings.token_ttl_s or self.token_ttl_s

    def _refused(self, addresses: list[str]) -> str | None:
        refused = [a for a in addresses if self.faults.refuses(a)]
        return (
            f"email_addresses contains {len(refused)} address(es) this account refuses." if refused else None
        )

    def expire_tokens(self) -> int:
        return self.tokens.expire_all(self.core.clock.now())

    # -- token ----------------------------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        body = await request.body()
        return await self.serve(TOKEN_OPERATION, lambda: self._token(request, body))

    def _token(self, request: Request, body: bytes) -> Response:
        if not is_form(request):
            return oauth_error(415, "unsupported_media_type", "Content-Type must be form-urlencoded")
        fields = form_fields(request, body)
        credentials = basic_credentials(request.headers.get("authorization"))
        if credentials is None or self.clients.get(credentials[0]) != credentials[1]:
            return oauth_error(400, "invalid_client")
        if fields.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type")
        scope = fields.get("scope", PARTNER_SCOPE)
        if scope != PARTNER_SCOPE:
            return oauth_error(400, "invalid_scope")
        ttl_s = self.current_ttl_s
        token = self.tokens.issue(
            subject=credentials[0], scope=scope, ttl_s=ttl_s, now=self.core.clock.now(), audience="partner"
        )
        return JSONResponse({"access_token": token, "expires_in": int(ttl_s), "token_type": "Bearer"})

    # -- unsubscribe ----------------------------------------------------------------------------

    async def unsubscribe_endpoint(self, request: Request) -> Response:
        body = await request.body()
        return await self.serve(UNSUBSCRIBE, lambda: self._unsubscribe(request, body))

    def _unsubscribe(self, request: Request, raw: bytes) -> Response:
        now = self.core.clock.now()
        token = bearer(request.headers.get("authorization"))
        if request.headers.get("x-api-key") not in self.api_keys or not self.tokens.valid(token, now):
            return cc_error(401)
        account = request.path_params["encoded_account_id"]
        if account not in self.accounts:
            return cc_error(404, f"Account {account} was not found.", key="partner.api.not_found")
        if not is_json(request):
            return cc_error(415)
        body, problem = json_body(raw)
        problem = problem or validate_unsubscribe(body) or self._refused(body["email_addresses"])
        if problem is not None:
            return cc_error(400, problem, key="partner.api.validation.error")
        emails = list(dict.fromkeys(norm(e) for e in body["email_addresses"]))
        everywhere = bool(body.get("global_unsubscribe", False))
        scope = ALL_ACCOUNTS if everywhere else account
        stamp = self.core.clock.iso()
        for email in emails:
            self.unsubscribed.setdefault(scope, set()).add(email)
            self.ledger.events.append(
                {
                    "account": account,
                    "email": email,
                    "global": everywhere,
                    "reason": body.get("opt_out_reason"),
                    "source": body["update_source"],
                    "delete_contacts": bool(body.get("delete_contacts", False)),
                    "at": stamp,
                }
            )
        return JSONResponse({"unsubscribed_count": len(emails)})


def validate_unsubscribe(body: Any) -> str | None:
    """The first reason the spec (and CC) refuses this body, or None."""
    if not isinstance(body, dict):
        return "The request body must be a JSON object."
    unknown = sorted(set(body) - BODY_FIELDS)
    if unknown:
        return f"Unknown properties: {', '.join(unknown)}."
    if body.get("update_source") not in UPDATE_SOURCES:
        return "update_source is required and must be one of Account, Contact, System."
    addresses = body.get("email_addresses")
    if not isinstance(addresses, list) or not addresses:
        return "email_addresses must be an array of at least one email address."
    if len(addresses) > PARTNER_MAX_ADDRESSES:
        return f"email_addresses may contain at most {PARTNER_MAX_ADDRESSES} items."
    bad = [a for a in addresses if not is_email(a)]
    if bad:
        return f"email_addresses contains {len(bad)} invalid email address(es)."
    reason = body.get("opt_out_reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > OPT_OUT_REASON_MAX_CHARS):
        return f"opt_out_reason must be a string of at most {OPT_OUT_REASON_MAX_CHARS} characters."
    for flag in ("delete_contacts", "global_unsubscribe"):
        if flag in body and not isinstance(body[flag], bool):
            return f"{flag} must be a boolean."
    if body.get("global_unsubscribe") and len(addresses) != 1:
        return "When global_unsubscribe is true, email_addresses must contain exactly one address."
    return None

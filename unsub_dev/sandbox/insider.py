"""Fake Insider email API v2: global or group unsubscribe of up to 500 addresses a request.

``POST /insider/email/v2/unsubscribe`` with ``X-PARTNER-NAME`` (lowercase) and ``X-REQUEST-TOKEN``;
body ``{"emails": [...], "uploader_email": "..."}``, plus ``"is_unsubscribe_group": true`` and
``"group_name"`` for a group (without ``is_unsubscribe_group: true`` the upload is global, as
Insider documents; an unknown group is created). Answers ``{"statusMessage": "OK"}``, 400
``{"statusMessage": "Bad request"}`` or 401 ``{"statusMessage": "Unauthorized"}``. Any address is
accepted (Insider keeps an unsubscribe list, not contacts).
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from unsub_dev.sandbox.cc_common import json_body
from unsub_dev.sandbox.config import SandboxConfig
from unsub_dev.sandbox.faults import Fault
from unsub_dev.sandbox.provider import Provider
from unsub_dev.sandbox.state import is_email, norm

UNSUBSCRIBE: Final = "unsubscribe"
INSIDER_MAX_EMAILS: Final = 500
GROUP_NAME_MIN_CHARS: Final = 3
GROUP_NAME_MAX_CHARS: Final = 29
BODY_FIELDS: Final = frozenset({"emails", "uploader_email", "group_name", "is_unsubscribe_group"})
BAD_REQUEST: Final = "Bad request"
#: The documents say a dummy uploader address gets this error; its exact wording in v2 is not shown.
BAD_UPLOADER: Final = "Please enter a valid uploader email."
STATUS_MESSAGES: Final = {
    401: "Unauthorized",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def status(code: int, message: str) -> JSONResponse:
    return JSONResponse({"statusMessage": message}, status_code=code)


class Insider(Provider):
    name = "insider"
    prefix = "/insider"

    def reset(self, config: SandboxConfig) -> None:
        self.partners = {p.name: p.token for p in config.insider.partners}
        self.groups: dict[str, set[str]] = {g: set() for g in config.insider.groups}
        self.global_list: set[str] = set()

    def seed(self, data: dict[str, Any]) -> dict[str, int]:
        partners = {p["name"]: p["token"] for p in data.get("partners", [])}
        self.partners.update(partners)
        groups = [g for g in data.get("groups", []) if g not in self.groups]
        for group in groups:
            self.groups[group] = set()
        return {"partners": len(partners), "groups": len(groups)}

    def routes(self) -> list[BaseRoute]:
        return [Route("/email/v2/unsubscribe", self.unsubscribe_endpoint, methods=["POST"])]

    def error_response(self, fault: Fault) -> Response:
        return status(fault.status, STATUS_MESSAGES.get(fault.status, "Error"))

    def extra_state(self) -> dict[str, Any]:
        return {
            "unsubscribed": {
                "global": sorted(self.global_list),
                "groups": {name: sorted(emails) for name, emails in self.groups.items()},
            }
        }

    async def unsubscribe_endpoint(self, request: Request) -> Response:
        body = await request.body()
        tenant = request.headers.get("x-partner-name", "-")
        return await self.serve(UNSUBSCRIBE, lambda: self._unsubscribe(request, body), tenant=tenant)

    def _unsubscribe(self, request: Request, raw: bytes) -> Response:
        partner = request.headers.get("x-partner-name", "")
        token = self.partners.get(partner.lower())
        if token is None or request.headers.get("x-request-token") != token:
            return status(401, "Unauthorized")
        body, problem = json_body(raw)
        if partner != partner.lower() or problem is not None or not valid_body(body):
            return status(400, BAD_REQUEST)
        if any(self.faults.refuses(e) for e in body["emails"]):
            return status(400, BAD_REQUEST)
        if not is_email(body["uploader_email"]):
            return status(400, BAD_UPLOADER)
        emails = list(dict.fromkeys(norm(e) for e in body["emails"]))
        group = body.get("group_name") if body.get("is_unsubscribe_group") is True else None
        target = self.global_list if group is None else self.groups.setdefault(group, set())
        stamp = self.core.clock.iso()
        for email in emails:
            target.add(email)
            self.ledger.events.append(
                {
                    "partner": partner,
                    "email": email,
                    "global": group is None,
                    "group": group,
                    "uploader_email": body["uploader_email"],
                    "at": stamp,
                }
            )
        return status(200, "OK")


def valid_body(body: Any) -> bool:
    if not isinstance(body, dict) or set(body) - BODY_FIELDS:
        return False
    emails = body.get("emails")
    if not isinstance(emails, list) or not 1 <= len(emails) <= INSIDER_MAX_EMAILS:
        return False
    if not all(is_email(e) for e in emails) or not isinstance(body.get("uploader_email"), str):
        return False
    flag = body.get("is_unsubscribe_group")
    if flag is not None and not isinstance(flag, bool):
        return False
    if flag is True:
        name = body.get("group_name")
        return isinstance(name, str) and GROUP_NAME_MIN_CHARS <= len(name) <= GROUP_NAME_MAX_CHARS
    return True

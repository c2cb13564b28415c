"""Shapes both Constant Contact fakes share: the error array, OAuth errors, body reading."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from unsub_dev.sandbox.faults import Fault

FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"

#: error_key of each status CC answers with, as in its glossary and spec examples.
ERROR_KEYS: dict[int, str] = {
    400: "contacts.api.validation.error",
    401: "unauthorized",
    403: "forbidden",
    404: "contacts.api.not_found",
    409: "contacts.api.conflict",
    415: "unsupported.media.type",
    429: "throttled",
    500: "server.error",
    502: "bad.gateway",
    503: "service.unavailable",
    504: "gateway.timeout",
}
ERROR_MESSAGES: dict[int, str] = {
    401: "The access token used is invalid.",
    403: "Forbidden request. You lack the necessary scopes or privileges.",
    415: "Unsupported Media Type.",
    429: "Too many requests. You exceeded the request rate limit.",
    500: "There was a problem with our internal service.",
    502: "Bad gateway.",
    503: "Our internal service is temporarily unavailable.",
    504: "Gateway timeout.",
}


def cc_error(status: int, message: str | None = None, *, key: str | None = None) -> JSONResponse:
    """CC's error body: a JSON array of ``{"error_key", "error_message"}``."""
    body = [
        {
            "error_key": key or ERROR_KEYS.get(status, "error"),
            "error_message": message or ERROR_MESSAGES.get(status, "Error"),
        }
    ]
    return JSONResponse(body, status_code=status)


def cc_fault(fault: Fault) -> Response:
    return cc_error(fault.status)


def oauth_error(status: int, error: str, description: str | None = None) -> JSONResponse:
    body = {"error": error} if description is None else {"error": error, "error_description": description}
    return JSONResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def oauth_fault(fault: Fault) -> Response:
    if fault.status == 429:
        return oauth_error(429, "too_many_requests", "Rate limit exceeded")
    return oauth_error(fault.status, "server_error", "The server is temporarily unavailable")


def form_fields(request: Request, body: bytes) -> dict[str, str]:
    """Query parameters and url-encoded body fields together (the body wins)."""
    fields = dict(request.query_params)
    if body:
        for name, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
            fields[name] = values[-1]
    return fields


def is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM_CONTENT_TYPE


def is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json")


def json_body(body: bytes) -> tuple[Any, str | None]:
    """The parsed body, or an error message when it is not JSON."""
    try:
        return json.loads(body), None
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"The request body is not valid JSON: {type(exc).__name__}"

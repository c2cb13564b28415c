"""The sandbox ASGI app: every provider fake under its prefix, plus the ``/_sandbox`` control API.

Control API (JSON):

- ``GET /_sandbox/health`` → ``{"ok": true}``
- ``GET /_sandbox/state[?provider=NAME]`` → per provider: requests and rejections by operation,
  token requests, unsubscribe events, who is unsubscribed where, fault settings.
- ``GET /_sandbox/requests?provider=NAME[&operation=OP]`` → ``{"requests": [{"operation", "at",
  "status", "retry_after"}]}``: every request in arrival order (sandbox clock), to check rate limits
  and ``Retry-After`` from the provider's side.
- ``POST /_sandbox/reset`` → back to the configured seed; counters, tokens, faults and clock cleared.
- ``POST /_sandbox/seed`` ``{"auto_contacts": ..., "<provider>": {...}}`` → adds to the seed.
- ``GET /_sandbox/faults``; ``POST /_sandbox/faults`` ``{"<provider>" | "*": {...FaultSettings}}``.
- ``POST /_sandbox/tokens/expire`` ``{"provider": optional}`` → every live access token expires now.
- ``POST /_sandbox/clock`` ``{"advance_s": N}`` → move the sandbox clock (token expiry, windows).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from unsub_dev.sandbox.cc_contacts import CcContacts
from unsub_dev.sandbox.cc_partner import CcPartner
from unsub_dev.sandbox.config import SandboxConfig, load_config
from unsub_dev.sandbox.easytools import EasyTools
from unsub_dev.sandbox.faults import FaultSettings
from unsub_dev.sandbox.insider import Insider
from unsub_dev.sandbox.provider import Provider
from unsub_dev.sandbox.state import Core
from unsub_dev.sandbox.whatcounts import WhatCounts

ALL_PROVIDERS = "*"


class Sandbox:
    """The providers and their shared core; ``app`` is the ASGI application."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config if config is not None else load_config()
        self.core = Core(self.config)
        self.cc_partner = CcPartner(self.core)
        self.cc_contacts = CcContacts(self.core)
        providers: list[Provider] = [self.cc_partner, self.cc_contacts, WhatCounts(self.core)]
        providers += [Insider(self.core), EasyTools(self.core)]
        self.providers = {p.name: p for p in providers}
        self.reset()
        self.app = Starlette(routes=self._routes())

    def reset(self) -> None:
        with self.core.lock:
            self.core.clock.offset_s = 0.0
            self.core.set_auto_contacts(self.config.auto_contacts)
            for provider in self.providers.values():
                provider.fresh(self.config)

    def state(self, provider: str | None = None) -> dict[str, Any]:
        with self.core.lock:
            names = [provider] if provider else list(self.providers)
            return {
                "clock": self.core.clock.now(),
                "auto_contacts": self.core.auto_contacts,
                "providers": {n: self.providers[n].snapshot() for n in names if n in self.providers},
            }

    def _routes(self) -> list[BaseRoute]:
        cc: list[BaseRoute] = [*self.cc_partner.routes(), *self.cc_contacts.routes()]
        mounts: list[BaseRoute] = [Mount("/cc", routes=cc)]
        for provider in self.providers.values():
            if provider.prefix != "/cc":
                mounts.append(Mount(provider.prefix, routes=provider.routes()))
        control = [
            Route("/_sandbox/health", self._health, methods=["GET"]),
            Route("/_sandbox/state", self._state, methods=["GET"]),
            Route("/_sandbox/requests", self._requests, methods=["GET"]),
            Route("/_sandbox/reset", self._reset, methods=["POST"]),
            Route("/_sandbox/seed", self._seed, methods=["POST"]),
            Route("/_sandbox/faults", self._faults, methods=["GET", "POST"]),
            Route("/_sandbox/tokens/expire", self._expire, methods=["POST"]),
            Route("/_sandbox/clock", self._clock, methods=["POST"]),
        ]
        return [*control, *mounts]

    # -- control endpoints ----------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def _state(self, request: Request) -> Response:
        provider = request.query_params.get("provider")
        if provider is not None and provider not in self.providers:
            return _bad(f"unknown provider {provider!r}; known: {sorted(self.providers)}")
        return JSONResponse(self.state(provider))

    async def _requests(self, request: Request) -> Response:
        provider = request.query_params.get("provider")
        if provider not in self.providers:
            return _bad(f"give ?provider= one of {sorted(self.providers)}")
        with self.core.lock:
            calls = self.providers[provider].ledger.call_log(request.query_params.get("operation"))
        return JSONResponse({"requests": calls})

    async def _reset(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    async def _seed(self, request: Request) -> Response:
        data = await _json_object(request)
        if data is None:
            return _bad("the body must be a JSON object")
        unknown = set(data) - set(self.providers) - {"auto_contacts"}
        if unknown:
            return _bad(f"unknown keys {sorted(unknown)}; known: auto_contacts, {sorted(self.providers)}")
        try:
            with self.core.lock:
                if "auto_contacts" in data:
                    self.core.set_auto_contacts(data["auto_contacts"])
                added = {n: self.providers[n].seed(d) for n, d in data.items() if n in self.providers}
        except (ValidationError, KeyError, TypeError) as exc:
            return _bad(f"bad seed: {exc}")
        return JSONResponse({"added": added})

    async def _faults(self, request: Request) -> Response:
        if request.method == "POST":
            data = await _json_object(request)
            if data is None:
                return _bad("the body must be a JSON object of provider → fault settings")
            unknown = set(data) - set(self.providers) - {ALL_PROVIDERS}
            if unknown:
                return _bad(f"unknown providers {sorted(unknown)}; known: {sorted(self.providers)} or '*'")
            try:
                settings = {n: FaultSettings.model_validate(s) for n, s in data.items()}
            except ValidationError as exc:
                return _bad(f"bad fault settings: {exc}")
            with self.core.lock:
                now = self.core.clock.now()
                for name, setting in settings.items():
                    targets = self.providers if name == ALL_PROVIDERS else {name: self.providers[name]}
                    for provider in targets.values():
                        provider.faults.configure(setting, now)
        with self.core.lock:
            return JSONResponse({n: p.faults.snapshot() for n, p in self.providers.items()})

    async def _expire(self, request: Request) -> Response:
        data = await _json_object(request) or {}
        wanted = data.get("provider")
        expired: dict[str, int] = {}
        with self.core.lock:
            for provider in (self.cc_partner, self.cc_contacts):
                if wanted in (None, provider.name):
                    expired[provider.name] = provider.expire_tokens()
        return JSONResponse({"expired": expired})

    async def _clock(self, request: Request) -> Response:
        data = await _json_object(request)
        advance = data.get("advance_s") if data else None
        if not isinstance(advance, int | float) or advance < 0:
            return _bad('give {"advance_s": <seconds, at least 0>}')
        with self.core.lock:
            return JSONResponse({"now": self.core.clock.advance(float(advance))})


async def _json_object(request: Request) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _bad(message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=400)


def create_app(config: SandboxConfig | None = None) -> Starlette:
    """The ASGI app of a new sandbox (``Sandbox(config).app``)."""
    return Sandbox(config).app

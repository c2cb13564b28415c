"""The base of every provider fake: counting, fault injection, latency and the lock around handlers."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from starlette.responses import Response
from starlette.routing import BaseRoute

from unsub_dev.sandbox.config import SandboxConfig
from unsub_dev.sandbox.faults import Fault, ProviderFaults, RateInfo
from unsub_dev.sandbox.state import Core, Ledger

Handler = Callable[[], Response]


class Provider(ABC):
    """One provider's fake. Subclasses add routes, seeding and their own error shapes."""

    name: ClassVar[str]
    #: URL prefix the provider is mounted under.
    prefix: ClassVar[str]

    def __init__(self, core: Core) -> None:
        self.core = core
        self.ledger = Ledger()
        self.faults = ProviderFaults(core.config.seed, self.default_rate_limit(core.config))
        core.faults[self.name] = self.faults

    # -- to override --------------------------------------------------------------------------

    def default_rate_limit(self, config: SandboxConfig) -> int | None:
        return None

    @abstractmethod
    def routes(self) -> list[BaseRoute]:
        """The provider's HTTP routes, under its path prefix."""

    @abstractmethod
    def reset(self, config: SandboxConfig) -> None:
        """Forget everything and load the seed of ``config``."""

    @abstractmethod
    def seed(self, data: dict[str, Any]) -> dict[str, int]:
        """Add to the current seed; returns how many items of each kind were added."""

    @abstractmethod
    def error_response(self, fault: Fault) -> Response:
        """An injected fault, answered in the provider's own error shape."""

    def extra_state(self) -> dict[str, Any]:
        return {}

    def rate_headers(self, response: Response, rate: RateInfo, fault: Fault | None) -> None:
        """Rate-limit headers: by default only on a 429."""
        if fault is not None and fault.status == 429 and fault.retry_after_s is not None:
            response.headers["Retry-After"] = str(fault.retry_after_s)

    # -- shared -------------------------------------------------------------------------------

    def fresh(self, config: SandboxConfig) -> None:
        self.ledger = Ledger()
        self.faults = ProviderFaults(config.seed, self.default_rate_limit(config))
        self.core.faults[self.name] = self.faults
        self.reset(config)

    def snapshot(self) -> dict[str, Any]:
        return {**self.ledger.snapshot(), **self.extra_state(), "faults": self.faults.snapshot()}

    async def serve(self, operation: str, handler: Handler, *, tenant: str = "default") -> Response:
        """Count the request, inject a fault or run ``handler`` under the lock, count a rejection."""
        core = self.core
        with core.lock:
            self.ledger.requests[operation] += 1
            arrived = core.clock.now()
            fault, rate = self.faults.decide(operation, tenant, arrived)
            latency_s = self.faults.latency_s
        if latency_s > 0:
            await asyncio.sleep(latency_s)
        if fault is not None:
            response = self.error_response(fault)
            if fault.retry_after_s is not None:
                response.headers["Retry-After"] = str(fault.retry_after_s)
        else:
            with core.lock:
                response = handler()
        if rate is not None:
            self.rate_headers(response, rate, fault)
        with core.lock:
            retry_after = response.headers.get("retry-after")
            self.ledger.calls.append((operation, arrived, response.status_code, retry_after))
            if response.status_code >= 400:
                self.ledger.rejected[operation][str(response.status_code)] += 1
        return response

    def reject(self, operation: str, label: str) -> None:
        """Count a refusal the HTTP status does not show (e.g. WhatCounts' 200 ``FAILURE``). Locked."""
        self.ledger.rejected[operation][label] += 1

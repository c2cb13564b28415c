"""Fault injection per provider: error rate, latency, outage windows, token TTL and rate limits.

Settings arrive through ``POST /_sandbox/faults`` (``{"provider": {...}}``). Random errors draw from
a ``random.Random`` seeded per provider, so one sequential run of requests fails at the same places
every time. Decisions are made in this order: outage window, rate limit, random error.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ErrorStatus = Literal[429, 500, 502, 503, 504]
RATE_WINDOW_S = 60.0
#: Retry-After sent with an injected 429 that is not from the rate limiter.
INJECTED_RETRY_AFTER_S = 1


class FaultSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: Share of requests (0..1) answered with ``error_status`` instead of being served.
    error_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    error_status: ErrorStatus = 503
    #: Delay added before every answer.
    latency_ms: float = Field(default=0.0, ge=0.0)
    #: Outage window in epoch seconds (sandbox clock); ``outage_for_s`` sets it to start now.
    outage_start: float | None = None
    outage_end: float | None = None
    outage_for_s: float | None = Field(default=None, gt=0)
    outage_status: ErrorStatus = 503
    #: Lifetime of access tokens issued from now on (CC providers); None keeps the config's.
    token_ttl_s: float | None = Field(default=None, gt=0)
    #: Requests a minute per tenant (token, realm, partner); None keeps the provider's default, 0 disables.
    rate_limit_per_minute: int | None = Field(default=None, ge=0)
    #: Seed of this provider's random errors (default: the sandbox seed).
    seed: int | None = None
    #: Only these operations are affected (names as in the state's ``requests``); None for all.
    operations: list[str] | None = None
    #: Addresses matching this pattern (``re.search``, case-insensitive) are refused as invalid, every
    #: time: CC partner and Insider answer 400, WhatCounts counts the record as failed.
    refuse_emails: str | None = None

    @model_validator(mode="after")
    def _window(self) -> FaultSettings:
        if (self.outage_start is None) != (self.outage_end is None):
            raise ValueError("give both outage_start and outage_end, or outage_for_s")
        if self.refuse_emails is not None:
            re.compile(self.refuse_emails)
        return self


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected failure: the provider renders it in its own error shape."""

    status: int
    reason: str
    retry_after_s: int | None = None


@dataclass(frozen=True, slots=True)
class RateInfo:
    limit: int
    remaining: int
    reset_s: int


@dataclass(slots=True)
class _Window:
    start: float
    count: int


class ProviderFaults:
    """The fault settings, random stream and rate-limit windows of one provider."""

    def __init__(self, sandbox_seed: int, default_rate_limit: int | None) -> None:
        self.sandbox_seed = sandbox_seed
        self.default_rate_limit = default_rate_limit
        self.settings = FaultSettings()
        self.random = random.Random(sandbox_seed)
        self.windows: dict[str, _Window] = {}
        self.injected = 0

    def configure(self, settings: FaultSettings, now: float) -> None:
        if settings.outage_for_s is not None:
            settings = settings.model_copy(
                update={"outage_start": now, "outage_end": now + settings.outage_for_s, "outage_for_s": None}
            )
        self.settings = settings
        self.random = random.Random(self.sandbox_seed if settings.seed is None else settings.seed)
        self.windows.clear()
        self.injected = 0

    @property
    def rate_limit(self) -> int | None:
        limit = self.settings.rate_limit_per_minute
        limit = self.default_rate_limit if limit is None else limit
        return limit or None

    def refuses(self, email: str) -> bool:
        """True when ``refuse_emails`` makes this provider refuse the address."""
        pattern = self.settings.refuse_emails
        return pattern is not None and re.search(pattern, email, re.IGNORECASE) is not None

    @property
    def latency_s(self) -> float:
        return self.settings.latency_ms / 1000.0

    def decide(self, operation: str, tenant: str, now: float) -> tuple[Fault | None, RateInfo | None]:
        """The fault to inject into this request (if any) and the tenant's rate-limit standing."""
        s = self.settings
        rate = self._count(tenant, now)
        if s.operations is not None and operation not in s.operations:
            return None, rate
        fault = self._outage(now) or self._limited(rate) or self._random_error()
        if fault is not None:
            self.injected += 1
        return fault, rate

    def _outage(self, now: float) -> Fault | None:
        s = self.settings
        if s.outage_start is not None and s.outage_end is not None and s.outage_start <= now < s.outage_end:
            retry = math.ceil(s.outage_end - now) if s.outage_status in (429, 503) else None
            return Fault(s.outage_status, "outage", retry)
        return None

    def _limited(self, rate: RateInfo | None) -> Fault | None:
        if rate is not None and rate.remaining < 0:
            return Fault(429, "rate_limited", rate.reset_s)
        return None

    def _random_error(self) -> Fault | None:
        s = self.settings
        if s.error_rate <= 0 or self.random.random() >= s.error_rate:
            return None
        retry = INJECTED_RETRY_AFTER_S if s.error_status == 429 else None
        return Fault(s.error_status, "injected", retry)

    def _count(self, tenant: str, now: float) -> RateInfo | None:
        limit = self.rate_limit
        if limit is None:
            return None
        window = self.windows.get(tenant)
        if window is None or now - window.start >= RATE_WINDOW_S:
            window = self.windows[tenant] = _Window(now, 0)
        window.count += 1
        reset_s = max(1, math.ceil(window.start + RATE_WINDOW_S - now))
        return RateInfo(limit, limit - window.count, reset_s)

    def snapshot(self) -> dict[str, Any]:
        return {
            **self.settings.model_dump(),
            "effective_rate_limit_per_minute": self.rate_limit,
            "injected": self.injected,
        }

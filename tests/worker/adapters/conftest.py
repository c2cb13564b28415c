"""Fixtures for adapter unit tests: connections, records, dependencies on a real Redis, captured logs.

Provider HTTP is mocked with respx (``respx_mock``); nothing leaves the machine.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import redis

from worker.adapters.base import AdapterDeps, NullObserver
from worker.adapters.cc_contacts import CcContactsConnection
from worker.adapters.cc_partner import CcPartnerConnection
from worker.adapters.easytools import EasyToolsConnection
from worker.adapters.insider import InsiderConnection
from worker.adapters.whatcounts import WhatCountsConnection
from worker.logs import configure_logging
from worker.records import DeliveryRecord

CC_BASE = "https://api.cc.test/v3"
PARTNER_TOKEN_URL = "https://auth.cc.test/oauth2/token"
CONTACTS_TOKEN_URL = "https://authz.cc.test/oauth2/default/v1/token"
WC_BASE = "https://wc.test"
INSIDER_BASE = "https://contact.insider.test"
EASY_BASE = "https://email.easy.test/api/v1"

#: Secrets of the test connections: none may ever show up in a log line or an outcome.
API_KEY = "cc-api-key-0123456789"
CLIENT_SECRET = "cc-client-secret-0123456789"
REFRESH_TOKEN = "cc-refresh-token-0123456789"
WC_PASSWORD = "wc-password-0123456789"
INSIDER_TOKEN = "insider-token-0123456789"
EASY_TOKEN = "easy-token-0123456789"
SECRETS = (API_KEY, CLIENT_SECRET, REFRESH_TOKEN, WC_PASSWORD, INSIDER_TOKEN, EASY_TOKEN)


def make_record(email: str = "jane@example.com", target: str = "account", **fields: Any) -> DeliveryRecord:
    values: dict[str, Any] = {
        "request_id": f"req-{uuid.uuid4().hex[:8]}",
        "connection": "test",
        "email": email,
        "target": target,
        "requested_at": datetime.now(UTC),
        "accepted_at": time.time(),
        **fields,
    }
    return DeliveryRecord(**values)


def partner_conn(**overrides: Any) -> CcPartnerConnection:
    values: dict[str, Any] = {
        "type": "cc_partner",
        "name": "ccp",
        "base_url": CC_BASE,
        "api_key": API_KEY,
        "client_id": "partner-client",
        "client_secret": CLIENT_SECRET,
        "token_url": PARTNER_TOKEN_URL,
        "encoded_account_id": "a07e1lxqqqo0",
        "timeout_s": 5,
        **overrides,
    }
    return CcPartnerConnection(**values)


def contacts_conn(**overrides: Any) -> CcContactsConnection:
    values: dict[str, Any] = {
        "type": "cc_contacts",
        "name": "ccc",
        "base_url": CC_BASE,
        "client_id": "contacts-client",
        "client_secret": CLIENT_SECRET,
        "token_url": CONTACTS_TOKEN_URL,
        "refresh_token": REFRESH_TOKEN,
        "timeout_s": 5,
        **overrides,
    }
    return CcContactsConnection(**values)


def whatcounts_conn(**overrides: Any) -> WhatCountsConnection:
    values: dict[str, Any] = {
        "type": "whatcounts",
        "name": "wc",
        "base_url": WC_BASE,
        "realm": "acme",
        "password": WC_PASSWORD,
        **overrides,
    }
    return WhatCountsConnection(**values)


def insider_conn(**overrides: Any) -> InsiderConnection:
    values: dict[str, Any] = {
        "type": "insider",
        "name": "ins",
        "base_url": INSIDER_BASE,
        "partner_name": "MyBrand",
        "token": INSIDER_TOKEN,
        "uploader_email": "ops@brand.example",
        **overrides,
    }
    return InsiderConnection(**values)


def easytools_conn(**overrides: Any) -> EasyToolsConnection:
    values: dict[str, Any] = {
        "type": "easytools",
        "name": "easy",
        "base_url": EASY_BASE,
        "token": EASY_TOKEN,
        **overrides,
    }
    return EasyToolsConnection(**values)


@pytest.fixture
def deps(redis_client: redis.Redis) -> AdapterDeps:
    """Adapter dependencies on the test Redis, with open gates and a counting observer."""
    return AdapterDeps(redis=redis_client, observer=NullObserver())


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Every log line (structlog and stdlib, httpx included) as the worker writes it, at DEBUG."""
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    yield stream
    configure_logging("INFO", "json", io.StringIO())


def assert_no_secret(*texts: str | None) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in (text or ""), f"secret {secret[:6]}… leaked"


class TokenServer:
    """A respx side effect for a token endpoint: numbered tokens, each request remembered."""

    def __init__(self, prefix: str = "access-token", lifetime_s: int = 3600, **extra: Any) -> None:
        self.prefix = prefix
        self.lifetime_s = lifetime_s
        self.extra = extra
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        body = {
            "access_token": f"{self.prefix}-{len(self.requests)}",
            "expires_in": self.lifetime_s,
            "token_type": "Bearer",
            **self.extra,
        }
        return httpx.Response(200, json=body)

    @property
    def count(self) -> int:
        return len(self.requests)


# The provider sandbox (a real HTTP server) for test_against_sandbox*.py.
from tests.support.sandbox_fixtures import sandbox, sandbox_factory, sandbox_server  # noqa: E402, F401

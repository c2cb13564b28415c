"""Pytest fixtures for the provider sandbox: a real HTTP server on a free port, and a small client.

Use them from a conftest.py::

    from tests.support.sandbox_fixtures import sandbox, sandbox_factory, sandbox_server  # noqa: F401

- ``sandbox_server``: one :class:`SandboxServer` for the session (built-in seed), on 127.0.0.1.
- ``sandbox``: a :class:`SandboxClient` of that server, reset before and after the test. Point a
  connection's ``base_url`` at ``sandbox.url + "/cc/v3"`` (see ``sandbox.connections()``); worker
  processes reach it over real HTTP.
- ``sandbox_factory``: ``sandbox_factory(auto_contacts=True, easytools={"rate_limit_per_minute": 0})``
  starts a separate server with config overrides (stopped after the test).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from unsub_dev.sandbox.config import load_config
from unsub_dev.sandbox.server import SandboxServer

CLIENT_TIMEOUT_S = 10.0


class SandboxClient:
    """The sandbox's control API (``/_sandbox``) over HTTP, plus an httpx client for provider calls."""

    def __init__(self, server: SandboxServer) -> None:
        self.server = server
        self.url = server.url
        self.http = httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT_S)

    def close(self) -> None:
        self.http.close()

    def _ok(self, response: httpx.Response) -> Any:
        assert response.status_code == 200, f"{response.request.url}: {response.status_code} {response.text}"
        return response.json()

    def state(self, provider: str | None = None) -> dict[str, Any]:
        """The whole state, or one provider's (``state("whatcounts")["unsubscribes"]``)."""
        params = {"provider": provider} if provider else None
        body = self._ok(self.http.get("/_sandbox/state", params=params))
        return body["providers"][provider] if provider else body  # type: ignore[no-any-return]

    def unsubscribes(self, provider: str) -> list[dict[str, Any]]:
        return self.state(provider)["unsubscribes"]  # type: ignore[no-any-return]

    def reset(self) -> None:
        self._ok(self.http.post("/_sandbox/reset"))

    def seed(self, **data: Any) -> dict[str, Any]:
        return self._ok(self.http.post("/_sandbox/seed", json=data))  # type: ignore[no-any-return]

    def faults(self, **per_provider: dict[str, Any]) -> dict[str, Any]:
        """Set fault settings: ``faults(easytools={"error_rate": 0.2, "error_status": 503, "seed": 7})``.

        Use ``**{"*": {...}}`` for every provider; settings given replace that provider's previous ones.
        """
        return self._ok(self.http.post("/_sandbox/faults", json=per_provider))  # type: ignore[no-any-return]

    def expire_tokens(self, provider: str | None = None) -> dict[str, int]:
        body = {"provider": provider} if provider else {}
        return self._ok(self.http.post("/_sandbox/tokens/expire", json=body))["expired"]  # type: ignore[no-any-return]

    def advance_clock(self, seconds: float) -> float:
        return self._ok(self.http.post("/_sandbox/clock", json={"advance_s": seconds}))["now"]  # type: ignore[no-any-return]

    def connections(self) -> list[dict[str, Any]]:
        """The connections of worker/examples/sandbox.yaml, pointed at this server."""
        u = self.url
        return [
            {
                "name": "cc-partner",
                "type": "cc_partner",
                "base_url": f"{u}/cc/v3",
                "token_url": f"{u}/cc/oauth2/token",
                "client_id": "sandbox-partner",
                "client_secret": "sandbox-partner-secret",
                "api_key": "sandbox-api-key",
                "encoded_account_id": "a07e1lxqqqo0",
            },
            {
                "name": "cc-contacts",
                "type": "cc_contacts",
                "base_url": f"{u}/cc/v3",
                "token_url": f"{u}/cc/oauth2/default/v1/token",
                "client_id": "sandbox-contacts-app",
                "client_secret": "sandbox-contacts-secret",
                "refresh_token": "sandbox-refresh-0",
            },
            {
                "name": "whatcounts",
                "type": "whatcounts",
                "base_url": f"{u}/whatcounts",
                "realm": "sandbox-realm",
                "password": "sandbox-pass",
                "default_list_id": "5",
            },
            {
                "name": "whatcounts-ck",
                "type": "whatcounts",
                "base_url": f"{u}/whatcounts",
                "realm": "ck-realm",
                "password": "ck-pass",
                "customer_key_required": True,
                "default_list_id": "7",
            },
            {
                "name": "insider",
                "type": "insider",
                "base_url": f"{u}/insider",
                "partner_name": "sandboxbrand",
                "token": "sandbox-insider-token",
                "uploader_email": "ops@example.com",
                "default_group": "newsletter",
            },
            {
                "name": "easytools",
                "type": "easytools",
                "base_url": f"{u}/easytools/api/v1",
                "token": "sandbox-easy-token",
                "rate_limit": "100/minute",
            },
        ]


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxClient]:
    client = SandboxClient(sandbox_server)
    client.reset()
    yield client
    client.reset()
    client.close()


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxClient]]:
    started: list[tuple[SandboxServer, SandboxClient]] = []

    def start(**overrides: Any) -> SandboxClient:
        server = SandboxServer(load_config(overrides=overrides)).start()
        client = SandboxClient(server)
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        client.close()
        server.stop()

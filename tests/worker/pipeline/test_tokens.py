"""The periodic token refresh (``unsub.refresh_token``): renew when due, never raise, count requests."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import respx

from tests.worker.adapters.conftest import (
    CLIENT_SECRET,
    PARTNER_TOKEN_URL,
    TokenServer,
    assert_no_secret,
    contacts_conn,
    log_output,
    partner_conn,
    whatcounts_conn,
)
from worker import keys
from worker.pipeline import counters
from worker.pipeline.runtime import Runtime
from worker.pipeline.tokens import refresh_connection_token
from worker.settings import load_settings

__all__ = ["log_output"]  # a fixture shared with the adapter tests


@pytest.fixture
def rt(redis_client: redis.Redis, redis_url: str) -> Iterator[Runtime]:
    connections: list[dict[str, Any]] = [
        partner_conn().model_dump(mode="json"),
        {**contacts_conn().model_dump(mode="json"), "enabled": False},
        whatcounts_conn().model_dump(mode="json"),
    ]
    for conn in connections:
        conn.update(_secrets(conn["type"]))
    runtime = Runtime(
        settings=load_settings(broker_url=redis_url, connections=connections),
        redis=redis_client,
        send_task=lambda name, args, queue, **_: None,
    )
    yield runtime
    runtime.close()


def _secrets(provider: str) -> dict[str, str]:
    """model_dump hides SecretStr values; put the real ones back."""
    if provider == "cc_partner":
        return {"api_key": "cc-api-key-0123456789", "client_secret": CLIENT_SECRET}
    if provider == "cc_contacts":
        return {"client_secret": CLIENT_SECRET, "refresh_token": "cc-refresh-token-0123456789"}
    return {"password": "wc-password-0123456789"}


@pytest.fixture
def token_endpoint(respx_mock: respx.MockRouter) -> TokenServer:
    server = TokenServer("partner-jwt")
    respx_mock.post(PARTNER_TOKEN_URL).mock(side_effect=server)
    return server


def test_a_missing_token_is_fetched_stored_and_counted(
    rt: Runtime, token_endpoint: TokenServer, redis_client: redis.Redis
) -> None:
    report = refresh_connection_token(rt, "ccp")

    assert report == {"connection": "ccp", "renewed": True}
    assert token_endpoint.count == 1
    assert "partner-jwt-1" in (redis_client.get(keys.token("ccp")) or "")
    assert counters.read_connection(redis_client, "ccp").get("token_refreshes") == 1


def test_a_fresh_token_is_left_alone(rt: Runtime, token_endpoint: TokenServer) -> None:
    refresh_connection_token(rt, "ccp")

    report = refresh_connection_token(rt, "ccp")

    assert report == {"connection": "ccp", "renewed": False}
    assert token_endpoint.count == 1


def test_refused_credentials_are_reported_and_logged_without_secrets(
    rt: Runtime, respx_mock: respx.MockRouter, log_output: io.StringIO
) -> None:
    respx_mock.post(PARTNER_TOKEN_URL).respond(401, json={"error": "invalid_client", "echo": CLIENT_SECRET})

    report = refresh_connection_token(rt, "ccp")

    assert report == {"connection": "ccp", "renewed": False, "error": "auth_failed"}
    assert "invalid_client" in log_output.getvalue()
    assert_no_secret(log_output.getvalue())


def test_an_unavailable_token_endpoint_is_reported_for_the_next_run(
    rt: Runtime, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(PARTNER_TOKEN_URL).respond(503)

    report = refresh_connection_token(rt, "ccp")

    assert report["error"] == "token_unavailable"


@pytest.mark.parametrize(
    ("connection", "skipped"), [("nope", "unknown_connection"), ("ccc", "disabled"), ("wc", "no_token")]
)
def test_connections_without_a_token_to_renew_are_skipped(rt: Runtime, connection: str, skipped: str) -> None:
    assert refresh_connection_token(rt, connection) == {
        "connection": connection,
        "renewed": False,
        "skipped": skipped,
    }


def test_the_refresh_task_the_scheduler_sends_is_registered_and_runs(
    rt: Runtime, token_endpoint: TokenServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.app
    from worker.app import app
    from worker.pipeline.trigger import REFRESH_TOKEN_TASK
    from worker.tasks import refresh_token_task

    monkeypatch.setattr(worker.app, "_runtime", rt)
    result = refresh_token_task.apply(args=["ccp"]).get()

    assert REFRESH_TOKEN_TASK in app.tasks
    assert result == {"connection": "ccp", "renewed": True}
    assert token_endpoint.count == 1

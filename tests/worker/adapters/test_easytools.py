"""easy.tools: UUID from the record, the cache or a search; idempotent unsubscribe; 404 handling."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import respx

from tests.worker.adapters.conftest import (
    EASY_BASE,
    EASY_TOKEN,
    assert_no_secret,
    easytools_conn,
    make_record,
)
from worker import keys
from worker.adapters import easytools
from worker.adapters.base import AdapterDeps, OutcomeKind
from worker.adapters.easytools import EasyToolsAdapter, email_field

UUID = "9f2c1e4a-0000-4000-8000-000000000001"
OTHER_UUID = "9f2c1e4a-0000-4000-8000-000000000002"
SEARCH_URL = f"{EASY_BASE}/contacts"


def unsubscribe_url(contact_uuid: str = UUID) -> str:
    return f"{EASY_BASE}/contacts/{contact_uuid}/unsubscribe"


def listing(*contacts: tuple[str, str]) -> dict[str, Any]:
    data = [{"uuid": u, "email": e, "first_name": "J"} for e, u in contacts]
    return {"data": data, "pagination": {"current_page": 1, "per_page": 100, "total": len(data)}}


UNSUBSCRIBED: Any = {
    "data": {"uuid": UUID, "status": "unsubscribed", "subscription": {"is_unsubscribed": True}}
}
NOT_FOUND: Any = {"error": {"code": "RESOURCE_NOT_FOUND", "message": f"Contact with UUID '{UUID}' not found"}}


@pytest.fixture
def adapter(deps: AdapterDeps) -> Iterator[EasyToolsAdapter]:
    built = EasyToolsAdapter(easytools_conn(), deps)
    yield built
    built.close()


def test_a_uuid_from_the_request_is_unsubscribed_without_a_search(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter
) -> None:
    search = respx_mock.get(SEARCH_URL).respond(200, json=listing())
    route = respx_mock.post(unsubscribe_url()).respond(200, json=UNSUBSCRIBED)

    outcome = adapter.deliver([make_record(contact_id=UUID)])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    assert search.call_count == 0
    request = route.calls[0].request
    assert request.headers["authorization"] == f"Bearer {EASY_TOKEN}"
    assert request.content == b""


def test_an_address_is_searched_matched_exactly_cached_and_unsubscribed(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter, redis_client: redis.Redis
) -> None:
    search = respx_mock.get(SEARCH_URL).respond(
        200, json=listing(("jane.doe@example.com", OTHER_UUID), ("jane@example.com", UUID))
    )
    route = respx_mock.post(unsubscribe_url()).respond(200, json=UNSUBSCRIBED)

    first = adapter.deliver([make_record("Jane@example.com")])[0]
    second = adapter.deliver([make_record("jane@example.com")])[0]

    assert (first.kind, second.kind) == (OutcomeKind.DELIVERED, OutcomeKind.DELIVERED)
    assert search.call_count == 1  # the second delivery used the cache
    assert search.calls[0].request.url.params["search"] == "Jane@example.com"
    assert route.call_count == 2  # unsubscribing again is harmless: the call is idempotent
    cached = redis_client.hgetall(keys.contact_cache("easy"))
    assert cached == {email_field("jane@example.com"): UUID}
    assert "jane@example.com" not in str(redis_client.hkeys(keys.contact_cache("easy")))


def test_an_address_no_contact_has_is_dead_as_contact_not_found(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(SEARCH_URL).respond(200, json=listing(("other@example.com", OTHER_UUID)))

    outcome = adapter.deliver([make_record("jane@example.com")])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "contact_not_found")


def test_a_404_on_unsubscribe_is_dead_as_contact_not_found(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(unsubscribe_url()).respond(404, json=NOT_FOUND)

    outcome = adapter.deliver([make_record(contact_id=UUID)])[0]

    assert (outcome.kind, outcome.reason, outcome.status) == (OutcomeKind.DEAD, "contact_not_found", 404)
    assert "RESOURCE_NOT_FOUND" in (outcome.excerpt or "")


def test_a_cached_uuid_the_provider_forgot_is_dropped_and_looked_up_again(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter, redis_client: redis.Redis
) -> None:
    redis_client.hset(keys.contact_cache("easy"), email_field("jane@example.com"), OTHER_UUID)
    respx_mock.post(unsubscribe_url(OTHER_UUID)).respond(404, json=NOT_FOUND)
    respx_mock.get(SEARCH_URL).respond(200, json=listing(("jane@example.com", UUID)))
    route = respx_mock.post(unsubscribe_url()).respond(200, json=UNSUBSCRIBED)

    outcome = adapter.deliver([make_record("jane@example.com")])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    assert route.call_count == 1
    assert redis_client.hget(keys.contact_cache("easy"), email_field("jane@example.com")) == UUID


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_transient_statuses_are_retried_honouring_retry_after(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter, status: int
) -> None:
    body = {"error": {"code": "RATE_LIMITED", "message": "Too many requests."}}
    respx_mock.post(unsubscribe_url()).respond(status, json=body, headers={"Retry-After": "60"})

    outcome = adapter.deliver([make_record(contact_id=UUID)])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, f"http_{status}")
    assert outcome.not_before == pytest.approx(time.time() + 60, abs=5)


def test_a_connection_error_while_searching_is_retried(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(SEARCH_URL).mock(side_effect=httpx.ConnectError("down"))

    outcome = adapter.deliver([make_record("jane@example.com")])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "connection_error")


@pytest.mark.parametrize("status", [400, 403, 422])
def test_a_refused_unsubscribe_is_dead_with_the_providers_message(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter, status: int
) -> None:
    body = {"error": {"code": "FORBIDDEN", "message": "Contact cannot be changed: it is managed by Easycart"}}
    respx_mock.post(unsubscribe_url()).respond(status, json=body)

    outcome = adapter.deliver([make_record(contact_id=UUID)])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "rejected_by_provider")
    assert "managed by Easycart" in (outcome.message or "")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_token_on_the_search_stops_the_connection(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter, status: int
) -> None:
    respx_mock.get(SEARCH_URL).respond(status, json={"error": {"code": "UNAUTHENTICATED", "message": "no"}})

    outcome = adapter.deliver([make_record("jane@example.com")])[0]

    assert outcome.kind is OutcomeKind.REAUTH


def test_a_401_on_unsubscribe_stops_the_connection_and_no_secret_is_logged(
    adapter: EasyToolsAdapter, respx_mock: respx.MockRouter, log_output: io.StringIO
) -> None:
    respx_mock.post(unsubscribe_url()).respond(401, text=f"Bearer {EASY_TOKEN} rejected")

    outcome = adapter.deliver([make_record(contact_id=UUID)])[0]

    assert outcome.kind is OutcomeKind.REAUTH
    assert adapter.max_batch_size == 1  # under easy.tools' 100/minute: one record a batch, one a call
    assert_no_secret(outcome.message, outcome.excerpt, log_output.getvalue())


def test_a_contact_cache_past_its_cap_is_dropped_and_fills_again(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(easytools, "CONTACT_CACHE_MAX_ENTRIES", 2)
    key = keys.contact_cache("easy")
    for n in range(2):
        easytools.remember_contact(redis_client, key, f"u{n}@example.com", UUID)
    assert redis_client.hlen(key) == 2

    easytools.remember_contact(redis_client, key, "u2@example.com", UUID)
    dropped = redis_client.exists(key)
    easytools.remember_contact(redis_client, key, "u3@example.com", UUID)

    assert dropped == 0
    assert redis_client.hgetall(key) == {email_field("u3@example.com"): UUID}
    assert 0 < redis_client.ttl(key) <= easytools.CONTACT_CACHE_TTL_S

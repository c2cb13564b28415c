"""Constant Contact contacts API: find, GET whole, PUT back unsubscribed without wiping anything."""

from __future__ import annotations

import copy
import io
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import redis
import respx

from tests.worker.adapters.conftest import (
    CC_BASE,
    CONTACTS_TOKEN_URL,
    REFRESH_TOKEN,
    TokenServer,
    assert_no_secret,
    contacts_conn,
    make_record,
)
from worker.adapters.base import AdapterDeps, OutcomeKind
from worker.adapters.cc_contacts import INCLUDE, PUT_SUBRESOURCES, CcContactsAdapter
from worker.adapters.refresh_tokens import StoredRefreshToken, fingerprint, read_stored

CONTACT_ID = "1618ae62-4752-11e9-9c8a-fa163e6b01c1"
SEARCH_URL = f"{CC_BASE}/contacts"
CONTACT_URL = f"{CC_BASE}/contacts/{CONTACT_ID}"

CONTACT: dict[str, Any] = {
    "contact_id": CONTACT_ID,
    "email_address": {
        "address": "jane@example.com",
        "permission_to_send": "implicit",
        "created_at": "2024-01-02T03:04:05Z",
        "updated_at": "2024-02-02T03:04:05Z",
        "opt_in_source": "Account",
        "opt_in_date": "2024-01-02T03:04:05Z",
        "confirm_status": "confirmed",
    },
    "first_name": "Jane",
    "last_name": "Doe",
    "job_title": "Engineer",
    "company_name": "Acme",
    "birthday_month": 11,
    "birthday_day": 24,
    "anniversary": "2006-11-15",
    "update_source": "Account",
    "create_source": "Account",
    "created_at": "2024-01-02T03:04:05Z",
    "updated_at": "2024-02-02T03:04:05Z",
    "custom_fields": [{"custom_field_id": "cf-1", "value": "gold", "extra": "x"}],
    "phone_numbers": [
        {"phone_number_id": "p-1", "phone_number": "+1 555 0100", "kind": "home", "created_at": "x"}
    ],
    "street_addresses": [
        {
            "street_address_id": "s-1",
            "kind": "home",
            "street": "1 Main St",
            "city": "Springfield",
            "state": "IL",
            "postal_code": "62701",
            "country": "US",
        }
    ],
    "list_memberships": ["list-a", "list-b"],
    "taggings": ["tag-1"],
    "notes": [{"note_id": "n-1", "created_at": "2024-01-03T00:00:00Z", "content": "VIP"}],
    "sms_channel": {"sms_address": "+15550100", "sms_channel_consents": []},
}


@pytest.fixture
def tokens(respx_mock: respx.MockRouter) -> TokenServer:
    server = TokenServer("contacts-access", lifetime_s=86400)
    respx_mock.post(CONTACTS_TOKEN_URL).mock(side_effect=server)
    return server


@pytest.fixture
def adapter(deps: AdapterDeps) -> Iterator[CcContactsAdapter]:
    built = CcContactsAdapter(contacts_conn(), deps)
    yield built
    built.close()


def mock_found(
    respx_mock: respx.MockRouter, contact: dict[str, Any] | None = None
) -> tuple[respx.Route, respx.Route]:
    """The search finds the whole contact; a GET by id would return it too. Both routes."""
    found = contact or CONTACT
    search = respx_mock.get(SEARCH_URL).respond(200, json={"contacts": [found]})
    get = respx_mock.get(CONTACT_URL).respond(200, json=found)
    return search, get


def test_the_contact_is_found_whole_by_its_search_and_put_back_unsubscribed_keeping_every_field(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    search, get_route = mock_found(respx_mock)
    put = respx_mock.put(CONTACT_URL).respond(200, json=CONTACT)

    outcome = adapter.deliver([make_record("Jane@Example.com", reason="asked by phone")])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    params = search.calls[0].request.url.params
    assert (params["email"], params["status"], params["include"]) == ("Jane@Example.com", "all", INCLUDE)
    assert set(INCLUDE.split(",")) == set(PUT_SUBRESOURCES)  # every sub-resource a PUT carries is read
    assert get_route.call_count == 0  # two calls a contact: the search and the PUT
    assert len(respx_mock.calls) == 3  # the token, the search, the PUT
    request = put.calls[0].request
    assert request.headers["authorization"] == "Bearer contacts-access-1"
    body = json.loads(request.content)
    for name in ("first_name", "last_name", "job_title", "company_name", "birthday_month", "birthday_day"):
        assert body[name] == CONTACT[name]
    assert body["anniversary"] == "2006-11-15"
    assert body["list_memberships"] == ["list-a", "list-b"]
    assert body["taggings"] == ["tag-1"]
    assert body["custom_fields"] == [{"custom_field_id": "cf-1", "value": "gold"}]
    assert body["phone_numbers"] == [{"phone_number": "+1 555 0100", "kind": "home"}]
    assert body["street_addresses"][0]["street"] == "1 Main St"
    assert body["notes"] == CONTACT["notes"]
    assert body["email_address"] == {
        "address": "jane@example.com",
        "created_at": "2024-01-02T03:04:05Z",
        "opt_in_date": "2024-01-02T03:04:05Z",
        "confirm_status": "confirmed",
        "permission_to_send": "unsubscribed",
        "opt_out_reason": "asked by phone",
    }
    assert body["update_source"] == "Contact"
    assert "sms_channel" not in body


def test_a_known_contact_id_skips_the_search(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    search = respx_mock.get(SEARCH_URL).respond(200, json={"contacts": []})
    get_route = respx_mock.get(CONTACT_URL).respond(200, json=CONTACT)
    put = respx_mock.put(CONTACT_URL).respond(200, json=CONTACT)

    outcome = adapter.deliver([make_record(contact_id=CONTACT_ID, source="System")])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    assert search.call_count == 0
    assert get_route.calls[0].request.url.params["include"] == INCLUDE
    body = json.loads(put.calls[0].request.content)
    assert body["update_source"] == "Account"
    assert (body["list_memberships"], body["notes"]) == (CONTACT["list_memberships"], CONTACT["notes"])


def test_a_search_answer_without_sub_resources_puts_none_so_the_provider_keeps_its_own(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    bare = {k: v for k, v in CONTACT.items() if k not in PUT_SUBRESOURCES}
    mock_found(respx_mock, bare)
    put = respx_mock.put(CONTACT_URL).respond(200, json=bare)

    outcome = adapter.deliver([make_record("jane@example.com")])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    body = json.loads(put.calls[0].request.content)
    # A PUT keeps the sub-resources it leaves out; an empty list would wipe them.
    assert not set(PUT_SUBRESOURCES) & set(body)
    assert (body["first_name"], body["anniversary"]) == ("Jane", "2006-11-15")


def test_a_search_hit_without_a_contact_id_is_not_put_anywhere(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    nameless = {k: v for k, v in CONTACT.items() if k != "contact_id"}
    respx_mock.get(SEARCH_URL).respond(200, json={"contacts": [nameless]})

    outcome = adapter.deliver([make_record("jane@example.com")])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "contact_not_found")
    assert [c.request.method for c in respx_mock.calls] == ["POST", "GET"]  # the token, the search


def test_without_a_reason_the_put_leaves_opt_out_reason_out_rather_than_sending_null(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    mock_found(respx_mock)
    put = respx_mock.put(CONTACT_URL).respond(200, json=CONTACT)

    outcome = adapter.deliver([make_record("jane@example.com", reason=None)])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    email = json.loads(put.calls[0].request.content)["email_address"]
    assert "opt_out_reason" not in email
    assert email["permission_to_send"] == "unsubscribed"


def test_an_address_with_no_contact_is_dead_as_contact_not_found_without_a_put(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    other = copy.deepcopy(CONTACT)
    other["email_address"]["address"] = "someone.else@example.com"
    respx_mock.get(SEARCH_URL).respond(200, json={"contacts": [other]})
    put = respx_mock.put(CONTACT_URL).respond(200)

    outcome = adapter.deliver([make_record("jane@example.com")])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "contact_not_found")
    assert put.call_count == 0


def test_a_contact_id_the_provider_does_not_know_is_contact_not_found(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    error = [{"error_key": "contacts.api.not_found", "error_message": "contact not found"}]
    respx_mock.get(CONTACT_URL).respond(404, json=error)

    outcome = adapter.deliver([make_record(contact_id=CONTACT_ID)])[0]

    assert (outcome.kind, outcome.reason, outcome.status) == (OutcomeKind.DEAD, "contact_not_found", 404)


def test_an_already_unsubscribed_contact_is_left_alone_and_counts_as_delivered(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    done = copy.deepcopy(CONTACT)
    done["email_address"]["permission_to_send"] = "unsubscribed"
    mock_found(respx_mock, done)
    put = respx_mock.put(CONTACT_URL).respond(200)

    outcome = adapter.deliver([make_record()])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    assert put.call_count == 0


def test_a_401_spends_the_refresh_token_once_and_the_call_is_sent_again(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    mock_found(respx_mock)
    put = respx_mock.put(CONTACT_URL).mock(side_effect=[httpx.Response(401), httpx.Response(200, json={})])

    outcome = adapter.deliver([make_record()])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    assert tokens.count == 2
    assert put.calls[1].request.headers["authorization"] == "Bearer contacts-access-2"
    form = parse_qs(tokens.requests[0].content.decode())
    assert form == {"grant_type": ["refresh_token"], "refresh_token": [REFRESH_TOKEN]}


def test_a_401_after_a_fresh_token_opens_auth_failure(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(SEARCH_URL).respond(401, json={"error_key": "unauthorized"})

    outcome = adapter.deliver([make_record()])[0]

    assert outcome.kind is OutcomeKind.REAUTH
    assert tokens.count == 2


def test_a_rotated_refresh_token_is_stored_and_used_for_the_next_renewal(
    deps: AdapterDeps, redis_client: redis.Redis, respx_mock: respx.MockRouter
) -> None:
    rotating = TokenServer("contacts-access", lifetime_s=86400)
    replies = iter(["rotated-refresh-1", "rotated-refresh-2"])

    def answer(request: httpx.Request) -> httpx.Response:
        rotating.extra = {"refresh_token": next(replies)}
        return rotating(request)

    respx_mock.post(CONTACTS_TOKEN_URL).mock(side_effect=answer)
    respx_mock.get(SEARCH_URL).mock(
        side_effect=[httpx.Response(401), httpx.Response(200, json={"contacts": []})]
    )
    adapter = CcContactsAdapter(contacts_conn(), deps)
    try:
        adapter.deliver([make_record()])
    finally:
        adapter.close()

    sent = [parse_qs(r.content.decode())["refresh_token"][0] for r in rotating.requests]
    assert sent == [REFRESH_TOKEN, "rotated-refresh-1"]
    assert read_stored(redis_client, "ccc") == StoredRefreshToken(
        "rotated-refresh-2", fingerprint(REFRESH_TOKEN)
    )


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_transient_statuses_on_the_put_are_retried_honouring_retry_after(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter, status: int
) -> None:
    mock_found(respx_mock)
    respx_mock.put(CONTACT_URL).respond(status, headers={"Retry-After": "10"})

    outcome = adapter.deliver([make_record()])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, f"http_{status}")
    assert outcome.not_before == pytest.approx(time.time() + 10, abs=5)


def test_a_timeout_while_searching_is_retried(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(SEARCH_URL).mock(side_effect=httpx.ReadTimeout("slow"))

    outcome = adapter.deliver([make_record()])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "timeout")


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_put_is_dead_with_the_providers_message(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter, status: int
) -> None:
    mock_found(respx_mock)
    error = [{"error_key": "contacts.api.validation.error", "error_message": "opt_out_reason is too long"}]
    respx_mock.put(CONTACT_URL).respond(status, json=error)

    outcome = adapter.deliver([make_record()])[0]

    assert (outcome.kind, outcome.reason, outcome.status) == (
        OutcomeKind.DEAD,
        "rejected_by_provider",
        status,
    )
    assert "opt_out_reason is too long" in (outcome.message or "")


def test_a_missing_scope_stops_the_connection(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(SEARCH_URL).respond(403, json=[{"error_key": "forbidden"}])

    outcome = adapter.deliver([make_record()])[0]

    assert outcome.kind is OutcomeKind.REAUTH


def test_records_go_one_per_call_and_nothing_secret_is_logged(
    adapter: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter, log_output: io.StringIO
) -> None:
    mock_found(respx_mock)
    respx_mock.put(CONTACT_URL).respond(500, text=f"oops refresh_token={REFRESH_TOKEN} contacts-access-1")

    outcome = adapter.deliver([make_record()])[0]

    # Under CC's 4/second a batch is one record (overlapping cannot beat the limit); one contact a call.
    assert adapter.max_batch_size == 1
    assert [c.request.url.params.get("email") for c in respx_mock.calls if c.request.method == "GET"] == [
        "jane@example.com"
    ]
    assert outcome.kind is OutcomeKind.RETRY
    assert_no_secret(outcome.message, outcome.excerpt, log_output.getvalue())
    assert "contacts-access-1" not in (outcome.excerpt or "") + log_output.getvalue()

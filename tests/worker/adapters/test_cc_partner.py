"""Constant Contact partner bulk unsubscribe: request shape, token use, every error class."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
import respx

from tests.worker.adapters.conftest import (
    API_KEY,
    CC_BASE,
    CLIENT_SECRET,
    PARTNER_TOKEN_URL,
    TokenServer,
    assert_no_secret,
    make_record,
    partner_conn,
)
from worker import keys
from worker.adapters.auth import IssuedToken
from worker.adapters.base import AdapterDeps, OutcomeKind
from worker.adapters.cc_partner import STATUS_TABLE, CcPartnerAdapter
from worker.adapters.classify import Verdict

UNSUBSCRIBE_URL = f"{CC_BASE}/partner/accounts/a07e1lxqqqo0/contacts/unsubscribe"


@pytest.fixture
def tokens(respx_mock: respx.MockRouter) -> TokenServer:
    server = TokenServer("partner-jwt")
    respx_mock.post(PARTNER_TOKEN_URL).mock(side_effect=server)
    return server


@pytest.fixture
def adapter(deps: AdapterDeps) -> Iterator[CcPartnerAdapter]:
    built = CcPartnerAdapter(partner_conn(), deps)
    yield built
    built.close()


def sent_body(request: httpx.Request) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(request.content)
    return body


def test_a_batch_goes_out_as_one_post_with_api_key_jwt_and_spec_field_names(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(200, json={"unsubscribed_count": 2})
    records = [make_record("a@example.com", reason="too many mails"), make_record("b@example.com")]

    outcomes = adapter.deliver(records[:1]) + adapter.deliver(records[1:])

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 2
    request = route.calls[0].request
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["authorization"] == "Bearer partner-jwt-1"
    assert sent_body(request) == {
        "email_addresses": ["a@example.com"],
        "update_source": "Contact",
        "delete_contacts": False,
        "global_unsubscribe": False,
        "opt_out_reason": "too many mails",
    }
    assert "opt_out_reason" not in sent_body(route.calls[1].request)
    assert tokens.count == 1  # the second call reuses the cached JWT


def test_records_sharing_account_source_and_reason_share_a_batch_key(adapter: CcPartnerAdapter) -> None:
    one, two = make_record("a@example.com", reason="r"), make_record("b@example.com", reason="r")
    other_reason = make_record("c@example.com", reason="other")
    other_source = make_record("d@example.com", reason="r", source="Account")

    assert adapter.batch_key(one) == adapter.batch_key(two)
    assert adapter.batch_key(one) != adapter.batch_key(other_reason)
    assert adapter.batch_key(one) != adapter.batch_key(other_source)
    assert adapter.max_batch_size == 500


def test_the_token_request_is_client_credentials_with_basic_auth_and_an_empty_form_body(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).respond(200, json={"unsubscribed_count": 1})

    adapter.deliver([make_record()])

    request = tokens.requests[0]
    assert request.url.params["grant_type"] == "client_credentials"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    expected = base64.b64encode(f"partner-client:{CLIENT_SECRET}".encode()).decode()
    assert request.headers["authorization"] == f"Basic {expected}"
    assert request.content == b""


def test_a_global_unsubscribe_carries_one_address_per_call(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(200, json={"unsubscribed_count": 1})
    records = [make_record(f"u{i}@example.com", target="all_accounts") for i in range(3)]

    assert len({adapter.batch_key(r) for r in records}) == 3
    outcomes = adapter.deliver(records)

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 3
    bodies = [sent_body(call.request) for call in route.calls]
    assert [b["email_addresses"] for b in bodies] == [
        ["u0@example.com"],
        ["u1@example.com"],
        ["u2@example.com"],
    ]
    assert all(b["global_unsubscribe"] is True for b in bodies)


def test_the_opt_out_reason_is_cut_to_255_characters(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(200, json={"unsubscribed_count": 1})

    adapter.deliver([make_record(reason="x" * 400)])

    assert sent_body(route.calls[0].request)["opt_out_reason"] == "x" * 255


def test_a_list_target_is_dead_before_any_call(adapter: CcPartnerAdapter) -> None:
    outcome = adapter.precheck(make_record(target="list:5"))

    assert outcome is not None
    assert outcome.kind is OutcomeKind.DEAD
    assert outcome.reason == "unsupported_target"
    assert adapter.precheck(make_record(target="all_accounts")) is None


def test_a_401_gets_one_fresh_token_and_the_call_is_sent_again(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).mock(
        side_effect=[httpx.Response(401, json={"error_key": "unauthorized"}), httpx.Response(200, json={})]
    )

    outcomes = adapter.deliver([make_record()])

    assert outcomes[0].kind is OutcomeKind.DELIVERED
    assert tokens.count == 2
    assert [c.request.headers["authorization"] for c in route.calls] == [
        "Bearer partner-jwt-1",
        "Bearer partner-jwt-2",
    ]


def test_a_401_after_a_fresh_token_opens_auth_failure(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).respond(401, json={"error_key": "unauthorized", "error_message": "no"})

    outcomes = adapter.deliver([make_record("a@example.com"), make_record("b@example.com")])

    assert [o.kind for o in outcomes] == [OutcomeKind.REAUTH] * 2
    assert outcomes[0].reason == "auth_failed"
    assert "freshly issued token" in (outcomes[0].message or "")
    assert tokens.count == 2  # one renewal, not one per record or per retry


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504])
def test_transient_statuses_retry_every_record_honouring_retry_after(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter, status: int
) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).respond(status, headers={"Retry-After": "120"}, text="busy")

    outcomes = adapter.deliver([make_record("a@example.com"), make_record("b@example.com")])

    assert [o.kind for o in outcomes] == [OutcomeKind.RETRY] * 2
    assert outcomes[0].reason == f"http_{status}"
    assert outcomes[0].not_before is not None
    assert outcomes[0].not_before == pytest.approx(time.time() + 120, abs=5)


def test_a_timeout_and_a_refused_connection_are_retried(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.ConnectError("refused")]
    )

    first, second = adapter.deliver([make_record()]), adapter.deliver([make_record()])

    assert (first[0].kind, first[0].reason) == (OutcomeKind.RETRY, "timeout")
    assert (second[0].kind, second[0].reason) == (OutcomeKind.RETRY, "connection_error")


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_batch_is_split_until_the_bad_address_is_alone_and_the_rest_delivered(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter, status: int
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "bad@example" in sent_body(request)["email_addresses"]:
            error = [{"error_key": "contacts.api.validation.error", "error_message": "email is invalid"}]
            return httpx.Response(status, json=error)
        return httpx.Response(200, json={"unsubscribed_count": len(sent_body(request)["email_addresses"])})

    respx_mock.post(UNSUBSCRIBE_URL).mock(side_effect=answer)
    emails = ["a@example.com", "b@example.com", "bad@example", "c@example.com", "d@example.com"]

    outcomes = adapter.deliver([make_record(e) for e in emails])

    kinds = [o.kind for o in outcomes]
    assert kinds == [OutcomeKind.DELIVERED] * 2 + [OutcomeKind.DEAD] + [OutcomeKind.DELIVERED] * 2
    dead = outcomes[2]
    assert dead.reason == "invalid_email"
    assert dead.status == status
    assert "email is invalid" in (dead.message or "")
    assert dead.excerpt is not None
    assert "contacts.api.validation.error" in dead.excerpt


def test_a_lone_refused_record_is_dead_with_the_providers_message(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    error = [{"error_key": "contacts.api.bad", "error_message": "update_source is not allowed here"}]
    respx_mock.post(UNSUBSCRIBE_URL).respond(400, json=error)

    outcome = adapter.deliver([make_record()])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "rejected_by_provider")
    assert "update_source is not allowed here" in (outcome.message or "")


@pytest.mark.parametrize("status", [403, 404])
def test_a_refused_scope_or_an_unknown_account_stops_the_connection(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter, status: int
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(status, json=[{"error_key": "x"}])

    outcomes = adapter.deliver([make_record("a@example.com"), make_record("b@example.com")])

    assert [o.kind for o in outcomes] == [OutcomeKind.REAUTH] * 2
    assert route.call_count == 1  # not split: no record is at fault


def test_the_status_table_says_what_each_documented_status_means() -> None:
    assert STATUS_TABLE(200) is Verdict.DELIVERED
    assert STATUS_TABLE(401) is Verdict.RENEW_TOKEN
    assert STATUS_TABLE(406) is Verdict.REAUTH
    assert STATUS_TABLE(599) is Verdict.RETRY


def test_a_refused_token_request_makes_every_record_wait_for_an_operator(
    adapter: CcPartnerAdapter, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(PARTNER_TOKEN_URL).respond(400, json={"error": "invalid_client"})
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(200, json={})

    outcomes = adapter.deliver([make_record()])

    assert outcomes[0].kind is OutcomeKind.REAUTH
    assert "invalid_client" in (outcomes[0].message or "")
    assert route.call_count == 0


def test_a_throttled_token_request_is_retried_not_dead(
    adapter: CcPartnerAdapter, respx_mock: respx.MockRouter
) -> None:
    respx_mock.post(PARTNER_TOKEN_URL).respond(429, headers={"Retry-After": "2"})

    outcome = adapter.deliver([make_record()])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "rate_limited")
    assert outcome.not_before is not None


def test_no_secret_reaches_an_outcome_or_a_log_line(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter, log_output: io.StringIO
) -> None:
    echo = f'[{{"error_key": "bad", "error_message": "key {API_KEY} token partner-jwt-1 {CLIENT_SECRET}"}}]'
    respx_mock.post(UNSUBSCRIBE_URL).respond(400, text=echo)

    outcome = adapter.deliver([make_record()])[0]

    assert outcome.kind is OutcomeKind.DEAD
    assert_no_secret(outcome.message, outcome.excerpt, log_output.getvalue())
    assert "partner-jwt-1" not in (outcome.excerpt or "") + log_output.getvalue()
    assert "renewed the shared access token" in log_output.getvalue()


def test_twenty_workers_hitting_401_with_the_same_expired_jwt_make_one_token_request(
    deps: AdapterDeps, tokens: TokenServer, respx_mock: respx.MockRouter, redis_client: redis.Redis
) -> None:
    now = time.time()
    old = IssuedToken("revoked-jwt", now - 600, now + 3000)
    redis_client.set(keys.token("ccp"), old.cache_text(), px=3_000_000)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer revoked-jwt":
            return httpx.Response(401, json={"error_key": "unauthorized"})
        return httpx.Response(200, json={"unsubscribed_count": 1})

    respx_mock.post(UNSUBSCRIBE_URL).mock(side_effect=answer)
    workers = [CcPartnerAdapter(partner_conn(), deps) for _ in range(20)]
    barrier = threading.Barrier(len(workers))

    def deliver(adapter: CcPartnerAdapter) -> OutcomeKind:
        barrier.wait()
        return adapter.deliver([make_record()])[0].kind

    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            kinds = list(pool.map(deliver, workers))
    finally:
        for adapter in workers:
            adapter.close()

    assert kinds == [OutcomeKind.DELIVERED] * 20
    assert tokens.count == 1


def test_an_unknown_account_is_reported_with_the_status_and_constant_contacts_words(
    adapter: CcPartnerAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    error = [{"error_key": "partner.api.not_found", "error_message": "Account a07e1lxqqqo0 was not found."}]
    respx_mock.post(UNSUBSCRIBE_URL).respond(404, json=error)

    [outcome] = adapter.deliver([make_record()])

    assert (outcome.kind, outcome.status) == (OutcomeKind.REAUTH, 404)
    assert outcome.message == (
        "HTTP 404 from Constant Contact unsubscribe: account not found: check encoded_account_id "
        "(partner.api.not_found: Account a07e1lxqqqo0 was not found.)"
    )
    assert "fresh token" not in (outcome.message or "")
    assert "partner.api.not_found" in (outcome.excerpt or "")

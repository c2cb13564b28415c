"""WhatCounts api_web unsub: caret data, list and global opt-out, Customer Key, URL length, answers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
import respx
from hypothesis import given
from hypothesis import strategies as st

from tests.worker.adapters.conftest import (
    WC_BASE,
    WC_PASSWORD,
    assert_no_secret,
    make_record,
    whatcounts_conn,
)
from worker.adapters.base import AdapterDeps, OutcomeKind
from worker.adapters.whatcounts import WhatCountsAdapter, encoded_length
from worker.adapters.whatcounts_reply import FailureKind, parse_reply

API_WEB = f"{WC_BASE}/bin/api_web"
Build = Callable[..., WhatCountsAdapter]


@pytest.fixture
def build(deps: AdapterDeps) -> Iterator[Build]:
    built: list[WhatCountsAdapter] = []

    def make(**overrides: Any) -> WhatCountsAdapter:
        built.append(WhatCountsAdapter(whatcounts_conn(**overrides), deps))
        return built[-1]

    yield make
    for adapter in built:
        adapter.close()


def rows_of(request: httpx.Request) -> list[str]:
    """The data rows of a request (GET query or POST form), header row first."""
    fields = request.url.params if request.method == "GET" else _form(request)
    data: str = fields["data"]
    return data.split("^")


def _form(request: httpx.Request) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(request.content.decode()).items()}


def counting_server(bad: set[str], list_id: str = "5") -> Callable[[httpx.Request], httpx.Response]:
    """Answers like WhatCounts: counts of failed records, never which ones."""

    def answer(request: httpx.Request) -> httpx.Response:
        records = rows_of(request)[1:]
        failed = sum(1 for row in records if row.split(",")[0] in bad)
        done = len(records) - failed
        word = "SUCCESS" if done else "FAILURE"
        return httpx.Response(
            200,
            text=f"{word}: {len(records)} record(s) processed. {done} users unsubscribed from list(s) "
            f"{list_id} ({done} total contacts), Records Failed Other Error {failed}",
        )

    return answer


def success(n: int, list_id: str = "5") -> str:
    return (
        f"SUCCESS: {n} record(s) processed. {n} users unsubscribed from list(s) {list_id} "
        f"({n} total contacts), Records Failed Other Error 0"
    )


def test_a_list_batch_is_one_get_with_caret_joined_rows_and_an_opt_out_record(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(API_WEB).respond(200, text=success(2))
    adapter = build()

    outcomes = adapter.deliver(
        [make_record("a@example.com", "list:5"), make_record("b@example.com", "list:5")]
    )

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 2
    params = route.calls[0].request.url.params
    assert (params["r"], params["p"], params["c"], params["list_id"], params["optout"]) == (
        "acme",
        WC_PASSWORD,
        "unsub",
        "5",
        "1",
    )
    assert params["data"] == "email^a@example.com^b@example.com"


def test_a_list_unsubscribe_without_list_optout_sends_no_optout_flag(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(API_WEB).respond(200, text=success(1))

    build(list_optout=False).deliver([make_record("a@example.com", "list:7")])

    params = route.calls[0].request.url.params
    assert params["list_id"] == "7"
    assert "optout" not in params


def test_a_global_opt_out_is_list_zero_with_optout_one(build: Build, respx_mock: respx.MockRouter) -> None:
    route = respx_mock.get(API_WEB).respond(200, text=success(1, "0"))

    outcome = build(list_optout=False).deliver([make_record("a@example.com", "global")])[0]

    assert outcome.kind is OutcomeKind.DELIVERED
    params = route.calls[0].request.url.params
    assert (params["list_id"], params["optout"]) == ("0", "1")


def test_list_and_global_records_never_share_a_batch(build: Build) -> None:
    adapter = build()

    keys = {adapter.batch_key(make_record(target=t)) for t in ("list:5", "list:6", "global", "list:5")}

    assert len(keys) == 3


def test_a_customer_key_realm_sends_email_and_customer_key_in_every_row(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(API_WEB).respond(200, text=success(2))
    records = [
        make_record("a@example.com", "list:5", customer_key="11293"),
        make_record("b@example.com", "list:5", customer_key="11294"),
    ]

    build(customer_key_required=True).deliver(records)

    assert rows_of(route.calls[0].request) == [
        "email,customer_key",
        "a@example.com,11293",
        "b@example.com,11294",
    ]


def test_a_record_without_customer_key_in_a_customer_key_realm_is_dead_before_any_call(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(API_WEB).respond(200, text=success(1))
    adapter = build(customer_key_required=True)

    outcome = adapter.precheck(make_record("a@example.com", "list:5"))

    assert outcome is not None
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "missing_customer_key")
    assert route.call_count == 0
    assert build().precheck(make_record("a@example.com", "list:5")) is None


@pytest.mark.parametrize("email", ["a^b@example.com", "a,b@example.com"])
def test_an_address_that_would_break_the_caret_data_is_dead_before_any_call(build: Build, email: str) -> None:
    outcome = build().precheck(make_record(email, "list:5"))

    assert outcome is not None
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "invalid_email")


def test_a_group_target_is_not_a_whatcounts_target(build: Build) -> None:
    outcome = build().precheck(make_record("a@example.com", "group:vip"))

    assert outcome is not None
    assert outcome.reason == "unsupported_target"


@pytest.mark.parametrize(
    "target", ["list", "list:", "list:0", "list:00", "list:-0", "list:0_", "list:05", "list:abc"]
)
def test_a_list_record_without_a_canonical_list_id_is_dead_no_list_target_before_any_call(
    build: Build, target: str
) -> None:
    outcome = build().precheck(make_record("a@example.com", target))

    assert outcome is not None
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "no_list_target")


def test_a_list_record_without_a_list_id_is_never_sent_as_list_0_even_past_the_precheck(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(API_WEB).respond(200, text=success(2))
    records = [make_record("a@example.com", "list:00"), make_record("b@example.com", "list:00")]

    outcomes = build().deliver(records)

    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.DEAD, "no_list_target")] * 2
    assert route.call_count == 0


def test_a_batch_too_long_for_one_url_goes_out_as_several_gets_each_within_the_limit(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(API_WEB).mock(side_effect=counting_server(set()))
    adapter = build(max_url_length=400)
    records = [make_record(f"subscriber.number{i:03d}@example.com", "list:5") for i in range(30)]

    outcomes = adapter.deliver(records)

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 30
    assert route.call_count > 1
    assert all(len(str(call.request.url)) <= 400 for call in route.calls)
    sent = [row for call in route.calls for row in rows_of(call.request)[1:]]
    assert sent == [r.email for r in records]
    assert adapter.max_batch_size < 30


def test_use_post_sends_the_fields_in_a_form_body_and_keeps_the_password_out_of_the_url(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(API_WEB).respond(200, text=success(3))
    records = [make_record(f"u{i}@example.com", "list:5") for i in range(3)]

    outcomes = build(use_post=True).deliver(records)

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 3
    request = route.calls[0].request
    assert WC_PASSWORD not in str(request.url)
    form = _form(request)
    assert (form["p"], form["c"], form["list_id"]) == (WC_PASSWORD, "unsub", "5")
    assert rows_of(request) == ["email", "u0@example.com", "u1@example.com", "u2@example.com"]


def test_unnamed_failed_records_are_found_by_splitting_and_the_rest_delivered(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    bad = {"bad1@example.com", "bad2@example.com"}
    route = respx_mock.get(API_WEB).mock(side_effect=counting_server(bad))
    emails = [f"u{i}@example.com" for i in range(6)]
    emails[1], emails[4] = "bad1@example.com", "bad2@example.com"

    outcomes = build().deliver([make_record(e, "list:5") for e in emails])

    dead = [e for e, o in zip(emails, outcomes, strict=True) if o.kind is OutcomeKind.DEAD]
    assert dead == ["bad1@example.com", "bad2@example.com"]
    assert sum(o.kind is OutcomeKind.DELIVERED for o in outcomes) == 4
    lone = outcomes[1]
    assert lone.reason == "rejected_by_provider"
    assert "Records Failed Other Error 1" in (lone.message or "")
    assert route.call_count > 1


def test_a_batch_whose_every_record_failed_is_dead_without_splitting(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.get(API_WEB).mock(side_effect=counting_server({"a@example.com", "b@example.com"}))

    outcomes = build().deliver(
        [make_record("a@example.com", "list:5"), make_record("b@example.com", "list:5")]
    )

    assert [o.kind for o in outcomes] == [OutcomeKind.DEAD] * 2
    assert route.call_count == 1


def test_an_address_not_on_the_list_is_not_a_failure(build: Build, respx_mock: respx.MockRouter) -> None:
    text = (
        "SUCCESS: 1 record(s) processed. 0 users unsubscribed from list(s) 5 (0 total contacts), "
        "Records Failed Other Error 0"
    )
    respx_mock.get(API_WEB).respond(200, text=text)

    outcome = build().deliver([make_record("a@example.com", "list:5")])[0]

    assert outcome.kind is OutcomeKind.DELIVERED


@pytest.mark.parametrize(
    "text",
    [
        "FAILURE: Unable to determine customer account (realm)",
        "FAILURE: Unable to acquire API user credentials through API User Manager.",
        f"FAILURE: Password ({WC_PASSWORD}) doesn't match entry for API user credentials in database "
        "or 10.0.0.1 isn't an approved IP",
    ],
)
def test_refused_credentials_stop_the_connection_without_showing_the_password(
    build: Build, respx_mock: respx.MockRouter, log_output: io.StringIO, text: str
) -> None:
    route = respx_mock.get(API_WEB).respond(200, text=text)

    outcomes = build().deliver(
        [make_record("a@example.com", "list:5"), make_record("b@example.com", "list:5")]
    )

    assert [o.kind for o in outcomes] == [OutcomeKind.REAUTH] * 2
    assert route.call_count == 1
    assert_no_secret(outcomes[0].message, outcomes[0].excerpt, log_output.getvalue())


def test_an_unknown_list_is_dead_for_every_record_without_splitting(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    text = "FAILURE: Error looking up list ids, one or more list ids specified do not belong to your realm"
    route = respx_mock.get(API_WEB).respond(200, text=text)

    outcomes = build().deliver([make_record(f"u{i}@example.com", "list:99") for i in range(4)])

    assert [o.kind for o in outcomes] == [OutcomeKind.DEAD] * 4
    assert outcomes[0].reason == "rejected_by_provider"
    assert route.call_count == 1


def test_an_invalid_address_failure_is_split_to_the_address_and_called_invalid_email(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "not-an-address" in rows_of(request):
            return httpx.Response(
                200, text="FAILURE: not-an-address does not appear to be a valid email address"
            )
        return httpx.Response(200, text=success(len(rows_of(request)) - 1))

    respx_mock.get(API_WEB).mock(side_effect=answer)
    emails = ["a@example.com", "not-an-address", "c@example.com"]

    outcomes = build().deliver([make_record(e, "list:5") for e in emails])

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED, OutcomeKind.DEAD, OutcomeKind.DELIVERED]
    assert outcomes[1].reason == "invalid_email"


def test_a_customer_key_failure_in_a_realm_configured_without_keys_stops_the_connection(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(API_WEB).respond(200, text="FAILURE: Customer Key is required for this realm")

    outcome = build().deliver([make_record("a@example.com", "list:5")])[0]

    assert outcome.kind is OutcomeKind.REAUTH


def test_an_answer_that_is_neither_success_nor_failure_is_retried(
    build: Build, respx_mock: respx.MockRouter
) -> None:
    respx_mock.get(API_WEB).respond(200, text="<html>maintenance</html>")

    outcome = build().deliver([make_record("a@example.com", "list:5")])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "unexpected_response")


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_transient_statuses_are_retried_honouring_retry_after(
    build: Build, respx_mock: respx.MockRouter, status: int
) -> None:
    respx_mock.get(API_WEB).respond(status, headers={"Retry-After": "30"})

    outcomes = build().deliver(
        [make_record("a@example.com", "list:5"), make_record("b@example.com", "list:5")]
    )

    assert [o.kind for o in outcomes] == [OutcomeKind.RETRY] * 2
    assert outcomes[0].not_before == pytest.approx(time.time() + 30, abs=5)


def test_timeouts_and_connection_errors_are_retried(build: Build, respx_mock: respx.MockRouter) -> None:
    respx_mock.get(API_WEB).mock(side_effect=[httpx.ConnectTimeout("slow"), httpx.ConnectError("down")])
    adapter = build()

    first = adapter.deliver([make_record("a@example.com", "list:5")])[0]
    second = adapter.deliver([make_record("a@example.com", "list:5")])[0]

    assert (first.reason, second.reason) == ("timeout", "connection_error")
    assert WC_PASSWORD not in (first.message or "") + (second.message or "")


@pytest.mark.parametrize("status", [400, 414, 422])
def test_an_http_refusal_of_a_batch_is_split_to_the_refused_record(
    build: Build, respx_mock: respx.MockRouter, status: int
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "bad@example.com" in rows_of(request):
            return httpx.Response(status, text="Bad Request")
        return httpx.Response(200, text=success(len(rows_of(request)) - 1))

    respx_mock.get(API_WEB).mock(side_effect=answer)
    emails = ["a@example.com", "b@example.com", "bad@example.com"]

    outcomes = build().deliver([make_record(e, "list:5") for e in emails])

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED, OutcomeKind.DELIVERED, OutcomeKind.DEAD]
    assert outcomes[2].status == status


@pytest.mark.parametrize("status", [401, 403, 404])
def test_refused_access_or_a_wrong_url_stops_the_connection(
    build: Build, respx_mock: respx.MockRouter, status: int
) -> None:
    respx_mock.get(API_WEB).respond(status)

    outcome = build().deliver([make_record("a@example.com", "list:5")])[0]

    assert outcome.kind is OutcomeKind.REAUTH


def test_the_password_never_reaches_a_log_line_even_with_httpx_logging_on(
    build: Build, respx_mock: respx.MockRouter, log_output: io.StringIO
) -> None:
    import logging

    logging.getLogger("httpx").setLevel(logging.DEBUG)
    respx_mock.get(API_WEB).respond(500, text=f"error for url ?p={WC_PASSWORD}")

    outcome = build().deliver([make_record("a@example.com", "list:5")])[0]
    build().deliver([make_record("b@example.com", "list:5")])

    assert outcome.kind is OutcomeKind.RETRY
    assert_no_secret(outcome.message, outcome.excerpt, log_output.getvalue())


def test_the_vendors_answers_are_read_with_their_counts() -> None:
    ok = parse_reply(success(3))
    partial = parse_reply(
        "SUCCESS: 3 record(s) processed. 2 users unsubscribed from list(s) 5 (2 total subscribers), "
        "Records Failed Other Error 1"
    )
    failure = parse_reply("FAILURE: Unable to determine customer account (realm)")

    assert ok is not None
    assert ok.success
    assert ok.failed_of(3) == 0
    assert partial is not None
    assert partial.failed_of(3) == 1
    assert partial.failed_of(4) == 2  # a record the answer does not count as processed failed too
    assert failure is not None
    assert not failure.success
    assert not failure.has_counts
    assert failure.failure_kind() is FailureKind.CREDENTIALS
    assert parse_reply("OK") is None


@given(st.text(max_size=60))
def test_the_encoded_length_of_a_value_is_what_httpx_puts_in_the_query_string(value: str) -> None:
    expected = len(str(httpx.QueryParams({"d": value}))) - 2

    assert encoded_length(value) == expected

"""Insider email API v2: global and group unsubscribe, headers, 500 a call, every error class."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx

from tests.worker.adapters.conftest import (
    INSIDER_BASE,
    INSIDER_TOKEN,
    assert_no_secret,
    insider_conn,
    make_record,
)
from worker.adapters.base import AdapterDeps, OutcomeKind
from worker.adapters.insider import InsiderAdapter

UNSUBSCRIBE_URL = f"{INSIDER_BASE}/email/v2/unsubscribe"
OK: Any = {"statusMessage": "OK"}


@pytest.fixture
def adapter(deps: AdapterDeps) -> Iterator[InsiderAdapter]:
    built = InsiderAdapter(insider_conn(), deps)
    yield built
    built.close()


def emails_of(request: httpx.Request) -> list[str]:
    emails: list[str] = json.loads(request.content)["emails"]
    return emails


def test_a_global_batch_is_one_post_with_lowercase_partner_token_and_uploader(
    adapter: InsiderAdapter, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(200, json=OK)

    outcomes = adapter.deliver(
        [make_record("a@example.com", "global"), make_record("b@example.com", "global")]
    )

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 2
    request = route.calls[0].request
    assert request.headers["x-partner-name"] == "mybrand"
    assert request.headers["x-request-token"] == INSIDER_TOKEN
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "emails": ["a@example.com", "b@example.com"],
        "uploader_email": "ops@brand.example",
    }


def test_a_group_batch_names_the_group_and_sets_is_unsubscribe_group(
    adapter: InsiderAdapter, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(200, json=OK)

    adapter.deliver([make_record("a@example.com", "group:weekly_news")])

    body = json.loads(route.calls[0].request.content)
    assert body["group_name"] == "weekly_news"
    assert body["is_unsubscribe_group"] is True


def test_batches_share_the_group_and_carry_at_most_500_addresses(adapter: InsiderAdapter) -> None:
    keys = {adapter.batch_key(make_record(target=t)) for t in ("global", "group:a", "group:b", "group:a")}

    assert len(keys) == 3
    assert adapter.max_batch_size == 500


@pytest.mark.parametrize("target", ["account", "list:5", "group", "group:", "group:ab", "group:" + "g" * 30])
def test_a_target_insider_cannot_take_is_dead_before_any_call(adapter: InsiderAdapter, target: str) -> None:
    outcome = adapter.precheck(make_record(target=target))

    assert outcome is not None
    assert outcome.reason == "unsupported_target"


@pytest.mark.parametrize("group", ["abc", "g" * 29])
def test_group_names_of_3_to_29_characters_pass_the_precheck(adapter: InsiderAdapter, group: str) -> None:
    assert adapter.precheck(make_record(target=f"group:{group}")) is None


#: Group names Insider would refuse or create as an odd new group.
EDGY_GROUPS = ["news\r\nletter", "news\tletter", "newsletter\n", "del\x7fete", " newsletter", "newsletter ",
               "newsletter\u00a0", "\u3000newsletter"]  # fmt: skip


@pytest.mark.parametrize("group", EDGY_GROUPS)
def test_a_group_with_a_control_character_or_whitespace_at_an_end_is_dead_before_any_call(
    adapter: InsiderAdapter, group: str
) -> None:
    outcome = adapter.precheck(make_record(target=f"group:{group}"))

    assert outcome is not None
    assert (outcome.kind, outcome.reason) == (OutcomeKind.DEAD, "unsupported_target")
    assert group.strip() not in outcome.message


def test_a_group_with_spaces_inside_passes_the_precheck(adapter: InsiderAdapter) -> None:
    assert adapter.precheck(make_record(target="group:weekly digest")) is None


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 503])
def test_transient_statuses_are_retried_honouring_retry_after(
    adapter: InsiderAdapter, respx_mock: respx.MockRouter, status: int
) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).respond(status, headers={"Retry-After": "60"})

    outcomes = adapter.deliver([make_record("a@example.com", "global")])

    assert (outcomes[0].kind, outcomes[0].reason) == (OutcomeKind.RETRY, f"http_{status}")
    assert outcomes[0].not_before == pytest.approx(time.time() + 60, abs=5)


def test_a_timeout_is_retried(adapter: InsiderAdapter, respx_mock: respx.MockRouter) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).mock(side_effect=httpx.WriteTimeout("slow"))

    outcome = adapter.deliver([make_record("a@example.com", "global")])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.RETRY, "timeout")


@pytest.mark.parametrize("status", [400, 422])
def test_a_bad_request_is_split_until_the_refused_address_is_alone(
    adapter: InsiderAdapter, respx_mock: respx.MockRouter, status: int
) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if "broken@" in emails_of(request):
            return httpx.Response(status, json={"statusMessage": "Bad request"})
        return httpx.Response(200, json=OK)

    respx_mock.post(UNSUBSCRIBE_URL).mock(side_effect=answer)
    emails = ["a@example.com", "broken@", "c@example.com", "d@example.com"]

    outcomes = adapter.deliver([make_record(e, "global") for e in emails])

    assert [o.kind for o in outcomes] == [
        OutcomeKind.DELIVERED,
        OutcomeKind.DEAD,
        OutcomeKind.DELIVERED,
        OutcomeKind.DELIVERED,
    ]
    assert outcomes[1].reason == "rejected_by_provider"
    assert "Bad request" in (outcomes[1].message or "")


def test_a_refused_uploader_address_stops_the_connection_instead_of_killing_records(
    adapter: InsiderAdapter, respx_mock: respx.MockRouter
) -> None:
    route = respx_mock.post(UNSUBSCRIBE_URL).respond(
        400, json={"statusMessage": "Please enter a valid uploader email"}
    )

    outcomes = adapter.deliver(
        [make_record("a@example.com", "global"), make_record("b@example.com", "global")]
    )

    assert [o.kind for o in outcomes] == [OutcomeKind.REAUTH] * 2
    assert route.call_count == 1


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refused_token_or_a_wrong_url_stops_the_connection(
    adapter: InsiderAdapter, respx_mock: respx.MockRouter, status: int
) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).respond(status, json={"statusMessage": "Unauthorized"})

    outcome = adapter.deliver([make_record("a@example.com", "global")])[0]

    assert (outcome.kind, outcome.reason) == (OutcomeKind.REAUTH, "auth_failed")


def test_the_token_never_reaches_an_outcome_or_a_log_line(
    adapter: InsiderAdapter, respx_mock: respx.MockRouter, log_output: io.StringIO
) -> None:
    respx_mock.post(UNSUBSCRIBE_URL).respond(401, text=f"token {INSIDER_TOKEN} is not valid")

    outcome = adapter.deliver([make_record("a@example.com", "global")])[0]

    assert outcome.kind is OutcomeKind.REAUTH
    assert_no_secret(outcome.message, outcome.excerpt, log_output.getvalue())

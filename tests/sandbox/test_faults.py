"""Fault injection: rates with a seed, outage windows, latency, and what the state counts."""

from __future__ import annotations

import time

from tests.support.sandbox_fixtures import SandboxClient

INSIDER = "/insider/email/v2/unsubscribe"
HEADERS = {"X-PARTNER-NAME": "sandboxbrand", "X-REQUEST-TOKEN": "sandbox-insider-token"}
BODY = {"emails": ["a@example.com"], "uploader_email": "ops@example.com"}


def statuses(sb: SandboxClient, n: int) -> list[int]:
    return [sb.http.post(INSIDER, json=BODY, headers=HEADERS).status_code for _ in range(n)]


def test_errors_fire_at_the_configured_rate_and_repeat_with_the_same_seed(sandbox: SandboxClient) -> None:
    sandbox.faults(insider={"error_rate": 0.25, "error_status": 503, "seed": 7})
    first = statuses(sandbox, 400)
    assert set(first) == {200, 503}
    assert 70 <= first.count(503) <= 130  # 25 % of 400, within a wide band
    sandbox.faults(insider={"error_rate": 0.25, "error_status": 503, "seed": 7})
    assert statuses(sandbox, 400) == first
    state = sandbox.state("insider")
    assert state["rejected"] == {"unsubscribe": {"503": 2 * first.count(503)}}
    assert state["requests"] == {"unsubscribe": 800}


def test_an_injected_error_has_the_providers_own_shape(sandbox: SandboxClient) -> None:
    sandbox.faults(
        insider={"error_rate": 1.0, "error_status": 429}, cc_partner={"error_rate": 1.0, "error_status": 500}
    )
    limited = sandbox.http.post(INSIDER, json=BODY, headers=HEADERS)
    assert (limited.status_code, limited.json(), limited.headers["Retry-After"]) == (
        429,
        {"statusMessage": "Too Many Requests"},
        "1",
    )
    failed = sandbox.http.post(
        "/cc/oauth2/token",
        params={"grant_type": "client_credentials"},
        auth=("sandbox-partner", "sandbox-partner-secret"),
    )
    assert failed.status_code == 500
    assert sandbox.unsubscribes("insider") == []


def test_an_outage_window_refuses_everything_until_it_ends(sandbox: SandboxClient) -> None:
    sandbox.faults(insider={"outage_for_s": 30, "outage_status": 502})
    assert statuses(sandbox, 3) == [502, 502, 502]
    sandbox.advance_clock(31)
    assert statuses(sandbox, 1) == [200]


def test_faults_can_target_one_operation_only(sandbox: SandboxClient) -> None:
    sandbox.faults(cc_partner={"error_rate": 1.0, "operations": ["unsubscribe"]})
    token = sandbox.http.post(
        "/cc/oauth2/token",
        params={"grant_type": "client_credentials"},
        auth=("sandbox-partner", "sandbox-partner-secret"),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert token.status_code == 200


def test_latency_delays_the_answer(sandbox: SandboxClient) -> None:
    sandbox.faults(insider={"latency_ms": 200})
    started = time.monotonic()
    assert statuses(sandbox, 1) == [200]
    assert time.monotonic() - started >= 0.2


def test_reset_clears_faults_counters_and_unsubscribes(sandbox: SandboxClient) -> None:
    sandbox.faults(**{"*": {"error_rate": 1.0}})
    assert statuses(sandbox, 1) == [503]
    sandbox.reset()
    assert statuses(sandbox, 1) == [200]
    state = sandbox.state("insider")
    assert state["requests"] == {"unsubscribe": 1}
    assert state["faults"]["error_rate"] == 0.0


def test_bad_fault_settings_are_refused_with_a_reason(sandbox: SandboxClient) -> None:
    response = sandbox.http.post("/_sandbox/faults", json={"insider": {"error_rate": 2}})
    assert response.status_code == 400
    assert "error_rate" in response.json()["error"]
    assert sandbox.http.post("/_sandbox/faults", json={"nope": {}}).status_code == 400

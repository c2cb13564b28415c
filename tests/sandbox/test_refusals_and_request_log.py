"""Sandbox features for failure tests: refusing chosen addresses every time, and the request log."""

from __future__ import annotations

from tests.support.sandbox_fixtures import SandboxClient

INSIDER = "/insider/email/v2/unsubscribe"
HEADERS = {"X-PARTNER-NAME": "sandboxbrand", "X-REQUEST-TOKEN": "sandbox-insider-token"}
WHATCOUNTS = "/whatcounts/bin/api_web"


def insider(sb: SandboxClient, *emails: str) -> int:
    body = {"emails": list(emails), "uploader_email": "ops@example.com"}
    return sb.http.post(INSIDER, json=body, headers=HEADERS).status_code


def test_an_address_matching_refuse_emails_gets_a_400_every_time_and_the_others_pass(
    sandbox: SandboxClient,
) -> None:
    sandbox.faults(insider={"refuse_emails": r"^blocked\."})
    assert [insider(sandbox, "blocked.one@example.com", "ok@example.com") for _ in range(3)] == [400] * 3
    assert insider(sandbox, "ok@example.com") == 200
    assert insider(sandbox, "Blocked.Two@example.com") == 400
    assert sandbox.state("insider")["unsubscribed"]["global"] == ["ok@example.com"]


def test_whatcounts_counts_a_refused_address_as_a_failed_record(sandbox: SandboxClient) -> None:
    sandbox.faults(whatcounts={"refuse_emails": "^blocked@"})
    params = {"r": "sandbox-realm", "p": "sandbox-pass", "c": "unsub", "list_id": "5"}
    answer = sandbox.http.get(WHATCOUNTS, params={**params, "data": "email^blocked@x.com^fine@x.com"})
    assert answer.text.endswith("Records Failed Other Error 1")


def test_the_request_log_lists_every_call_with_its_arrival_time_status_and_retry_after(
    sandbox: SandboxClient,
) -> None:
    insider(sandbox, "a@example.com")
    sandbox.faults(insider={"outage_for_s": 30, "outage_status": 429})
    insider(sandbox, "a@example.com")
    log = sandbox.http.get("/_sandbox/requests", params={"provider": "insider"}).json()["requests"]
    assert [(c["operation"], c["status"]) for c in log] == [("unsubscribe", 200), ("unsubscribe", 429)]
    assert log[0]["retry_after"] is None
    assert 29 <= int(log[1]["retry_after"]) <= 30
    assert log[0]["at"] <= log[1]["at"]
    assert sandbox.http.get("/_sandbox/requests").status_code == 400

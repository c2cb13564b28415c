"""easy.tools fake: search, idempotent unsubscribe, not found, and the 100-a-minute limit."""

from __future__ import annotations

from tests.support.sandbox_fixtures import SandboxClient

JOHN = "550e8400-e29b-41d4-a716-446655440000"
AUTH = {"Authorization": "Bearer sandbox-easy-token", "Accept": "application/json"}


def test_search_by_a_valid_email_is_an_exact_match_in_the_short_shape(sandbox: SandboxClient) -> None:
    response = sandbox.http.get(
        "/easytools/api/v1/contacts", params={"search": "john@example.com"}, headers=AUTH
    )
    body = response.json()
    assert [c["uuid"] for c in body["data"]] == [JOHN]
    assert "status" not in body["data"][0]
    assert body["pagination"] == {"current_page": 1, "per_page": 100, "total": 1}
    assert response.headers["X-RateLimit-Limit"] == "100"


def test_the_documented_unsubscribe_returns_the_full_contact_and_is_idempotent(
    sandbox: SandboxClient,
) -> None:
    first = sandbox.http.post(f"/easytools/api/v1/contacts/{JOHN}/unsubscribe", headers=AUTH)
    data = first.json()["data"]
    assert first.status_code == 200
    assert data["status"] == "unsubscribed"
    assert data["subscription"]["is_unsubscribed"] is True
    assert data["lists"] == [{"uuid": "a3f1c5d2-7e84-4b9f-8c63-1d0e2f3a4b5c", "name": "Newsletter"}]
    second = sandbox.http.post(f"/easytools/api/v1/contacts/{JOHN}/unsubscribe", headers=AUTH)
    assert second.json() == first.json()
    state = sandbox.state("easytools")
    assert state["unsubscribed"] == ["john@example.com"]
    assert [e["uuid"] for e in state["unsubscribes"]] == [JOHN]
    assert state["requests"] == {"unsubscribe": 2}


def test_an_unknown_uuid_gets_resource_not_found(sandbox: SandboxClient) -> None:
    response = sandbox.http.post(
        "/easytools/api/v1/contacts/11111111-2222-3333-4444-555555555555/unsubscribe", headers=AUTH
    )
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "RESOURCE_NOT_FOUND",
            "message": "Contact with UUID '11111111-2222-3333-4444-555555555555' not found",
        }
    }


def test_an_unknown_email_finds_nothing(sandbox: SandboxClient) -> None:
    response = sandbox.http.get(
        "/easytools/api/v1/contacts", params={"search": "nobody@example.com"}, headers=AUTH
    )
    assert response.json()["data"] == []


def test_the_101st_request_in_a_minute_gets_rate_limited_with_headers(sandbox: SandboxClient) -> None:
    for _ in range(100):
        assert (
            sandbox.http.post(f"/easytools/api/v1/contacts/{JOHN}/unsubscribe", headers=AUTH).status_code
            == 200
        )
    limited = sandbox.http.post(f"/easytools/api/v1/contacts/{JOHN}/unsubscribe", headers=AUTH)
    assert limited.status_code == 429
    assert limited.json() == {
        "error": {"code": "RATE_LIMITED", "message": "Too many requests. Please retry after 60 seconds."}
    }
    assert limited.headers["X-RateLimit-Limit"] == "100"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    sandbox.advance_clock(60)
    assert (
        sandbox.http.post(f"/easytools/api/v1/contacts/{JOHN}/unsubscribe", headers=AUTH).status_code == 200
    )
    assert sandbox.state("easytools")["rejected"] == {"unsubscribe": {"429": 1}}


def test_the_rate_limit_is_configurable_at_run_time(sandbox: SandboxClient) -> None:
    sandbox.faults(easytools={"rate_limit_per_minute": 2})
    codes = [
        sandbox.http.get(f"/easytools/api/v1/contacts/{JOHN}", headers=AUTH).status_code for _ in range(3)
    ]
    assert codes == [200, 200, 429]


def test_a_bad_bearer_token_gets_401(sandbox: SandboxClient) -> None:
    response = sandbox.http.get("/easytools/api/v1/contacts", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "UNAUTHENTICATED"


def test_auto_contacts_lets_any_matching_address_be_found_and_unsubscribed(sandbox: SandboxClient) -> None:
    sandbox.seed(auto_contacts=True)
    found = sandbox.http.get(
        "/easytools/api/v1/contacts", params={"search": "random7@load.test"}, headers=AUTH
    )
    [contact] = found.json()["data"]
    response = sandbox.http.post(f"/easytools/api/v1/contacts/{contact['uuid']}/unsubscribe", headers=AUTH)
    assert response.json()["data"]["email"] == "random7@load.test"
    assert sandbox.state("easytools")["unsubscribed"] == ["random7@load.test"]

"""CC technology-partner fake, driven by hand-written requests from the partner documents."""

from __future__ import annotations

import time

import httpx

from tests.support.sandbox_fixtures import SandboxClient

ACCOUNT = "a07e1lxqqqo0"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
CLIENT = ("sandbox-partner", "sandbox-partner-secret")
URL = f"/cc/v3/partner/accounts/{ACCOUNT}/contacts/unsubscribe"


def partner_token(sb: SandboxClient) -> str:
    response = sb.http.post(
        "/cc/oauth2/token", params={"grant_type": "client_credentials"}, auth=CLIENT, headers=FORM
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def unsubscribe(sb: SandboxClient, token: str, body: object, url: str = URL) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "x-api-key": "sandbox-api-key"}
    return sb.http.post(url, json=body, headers=headers)


DOC_BODY = {
    "email_addresses": ["lang.carry@anymail.com"],
    "update_source": "Account",
    "opt_out_reason": "Lost interest",
    "delete_contacts": False,
    "global_unsubscribe": False,
}


def test_the_token_call_in_cognito_shape_returns_a_bearer_jwt_for_an_hour(sandbox: SandboxClient) -> None:
    response = sandbox.http.post(
        "/cc/oauth2/token", params={"grant_type": "client_credentials"}, auth=CLIENT, headers=FORM
    )
    body = response.json()
    assert response.status_code == 200
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["access_token"].count(".") == 2
    assert sandbox.state("cc_partner")["token_requests"] == 1


def test_the_grant_type_may_also_come_in_the_form_body(sandbox: SandboxClient) -> None:
    response = sandbox.http.post(
        "/cc/oauth2/token", content=b"grant_type=client_credentials", auth=CLIENT, headers=FORM
    )
    assert response.status_code == 200


def test_a_wrong_client_secret_gets_invalid_client(sandbox: SandboxClient) -> None:
    response = sandbox.http.post(
        "/cc/oauth2/token",
        params={"grant_type": "client_credentials"},
        auth=("sandbox-partner", "x"),
        headers=FORM,
    )
    assert (response.status_code, response.json()) == (400, {"error": "invalid_client"})
    assert sandbox.state("cc_partner")["rejected"] == {"token": {"400": 1}}


def test_the_documented_unsubscribe_returns_the_count_and_is_recorded(sandbox: SandboxClient) -> None:
    response = unsubscribe(sandbox, partner_token(sandbox), DOC_BODY)
    assert (response.status_code, response.json()) == (200, {"unsubscribed_count": 1})
    state = sandbox.state("cc_partner")
    assert state["unsubscribed"] == {ACCOUNT: ["lang.carry@anymail.com"]}
    [event] = state["unsubscribes"]
    assert {k: event[k] for k in ("account", "email", "global", "reason", "source", "delete_contacts")} == {
        "account": ACCOUNT,
        "email": "lang.carry@anymail.com",
        "global": False,
        "reason": "Lost interest",
        "source": "Account",
        "delete_contacts": False,
    }
    assert state["requests"] == {"token": 1, "unsubscribe": 1}


def test_a_global_unsubscribe_of_one_address_covers_every_client_account(sandbox: SandboxClient) -> None:
    body = {"email_addresses": ["a@example.com"], "update_source": "Contact", "global_unsubscribe": True}
    response = unsubscribe(sandbox, partner_token(sandbox), body)
    assert response.json() == {"unsubscribed_count": 1}
    assert sandbox.state("cc_partner")["unsubscribed"] == {"*": ["a@example.com"]}


def test_bodies_the_spec_refuses_get_400_with_the_error_array(sandbox: SandboxClient) -> None:
    token = partner_token(sandbox)
    refused = [
        {**DOC_BODY, "email_addresses": [f"u{i}@example.com" for i in range(501)]},
        {**DOC_BODY, "update_source": "Robot"},
        {k: v for k, v in DOC_BODY.items() if k != "update_source"},
        {**DOC_BODY, "opt_out_reason": "x" * 256},
        {**DOC_BODY, "email_addresses": ["a@example.com", "b@example.com"], "global_unsubscribe": True},
        {**DOC_BODY, "email_addresses": []},
        # The prose guide's field names: wrong, the spec says email_addresses and delete_contacts.
        {"email_address": ["a@example.com"], "update_source": "Account", "delete_cotacts": False},
    ]
    for body in refused:
        response = unsubscribe(sandbox, token, body)
        assert response.status_code == 400, body
        [error] = response.json()
        assert set(error) == {"error_key", "error_message"}
    assert sandbox.state("cc_partner")["unsubscribes"] == []


def test_five_hundred_addresses_are_accepted_in_one_call(sandbox: SandboxClient) -> None:
    body = {**DOC_BODY, "email_addresses": [f"u{i}@example.com" for i in range(500)]}
    assert unsubscribe(sandbox, partner_token(sandbox), body).json() == {"unsubscribed_count": 500}


def test_an_unknown_client_account_gets_404(sandbox: SandboxClient) -> None:
    url = "/cc/v3/partner/accounts/zzzzzzzzzzzz/contacts/unsubscribe"
    response = unsubscribe(sandbox, partner_token(sandbox), DOC_BODY, url)
    assert response.status_code == 404
    assert response.json()[0]["error_key"] == "partner.api.not_found"


def test_a_missing_api_key_or_unknown_token_gets_401(sandbox: SandboxClient) -> None:
    token = partner_token(sandbox)
    no_key = sandbox.http.post(URL, json=DOC_BODY, headers={"Authorization": f"Bearer {token}"})
    assert no_key.status_code == 401
    assert no_key.json() == [
        {"error_key": "unauthorized", "error_message": "The access token used is invalid."}
    ]
    assert unsubscribe(sandbox, "not-a-token", DOC_BODY).status_code == 401


def test_an_expired_partner_token_gets_401(sandbox: SandboxClient) -> None:
    sandbox.faults(cc_partner={"token_ttl_s": 60})
    token = partner_token(sandbox)
    assert unsubscribe(sandbox, token, DOC_BODY).status_code == 200
    sandbox.advance_clock(61)
    assert unsubscribe(sandbox, token, DOC_BODY).status_code == 401
    assert unsubscribe(sandbox, partner_token(sandbox), DOC_BODY).status_code == 200


def test_a_short_token_ttl_really_expires_in_wall_time(sandbox: SandboxClient) -> None:
    sandbox.faults(cc_partner={"token_ttl_s": 0.3})
    token = partner_token(sandbox)
    assert unsubscribe(sandbox, token, DOC_BODY).status_code == 200
    time.sleep(0.4)  # the point of the test is the real clock
    assert unsubscribe(sandbox, token, DOC_BODY).status_code == 401


def test_expiring_all_tokens_now_turns_live_tokens_into_401(sandbox: SandboxClient) -> None:
    token = partner_token(sandbox)
    assert sandbox.expire_tokens("cc_partner") == {"cc_partner": 1}
    assert unsubscribe(sandbox, token, DOC_BODY).status_code == 401
    state = sandbox.state("cc_partner")
    assert state["tokens"] == {"issued": 1, "live": 0}
    assert state["rejected"] == {"unsubscribe": {"401": 1}}

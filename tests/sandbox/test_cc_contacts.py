"""CC contacts fake: refresh-token grant, find, get, and PUTs that overwrite what they omit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tests.support.sandbox_fixtures import SandboxClient

DEBORA = "1618ae62-4752-11e9-9c8a-fa163e6b01c1"
CLIENT = ("sandbox-contacts-app", "sandbox-contacts-secret")
INCLUDE = "custom_fields,list_memberships,phone_numbers,street_addresses,taggings,notes"


def refresh(sb: SandboxClient, refresh_token: str = "sandbox-refresh-0") -> dict[str, Any]:  # noqa: S107
    response = sb.http.post(
        "/cc/oauth2/default/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=CLIENT,
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def try_refresh(sb: SandboxClient, refresh_token: str) -> httpx.Response:
    return sb.http.post(
        "/cc/oauth2/default/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=CLIENT,
    )


def auth(sb: SandboxClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {refresh(sb)['access_token']}"}


def test_a_rotating_refresh_token_works_once_and_the_answer_carries_the_next(sandbox: SandboxClient) -> None:
    first = refresh(sandbox)
    assert first["token_type"] == "Bearer"
    assert first["expires_in"] == 86400
    assert first["refresh_token"] != "sandbox-refresh-0"
    again = sandbox.http.post(
        "/cc/oauth2/default/v1/token",
        data={"grant_type": "refresh_token", "refresh_token": "sandbox-refresh-0"},
        auth=CLIENT,
    )
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert refresh(sandbox, first["refresh_token"])["access_token"]
    assert sandbox.state("cc_contacts")["token_requests"] == 3


def test_a_restarted_sandbox_accepts_once_the_refresh_token_an_earlier_run_issued(
    sandbox_factory: Callable[..., SandboxClient],
) -> None:
    first_run = sandbox_factory()
    issued = refresh(first_run)["refresh_token"]
    first_run.server.stop()
    second_run = sandbox_factory()  # fresh memory, same config

    answer = refresh(second_run, issued)
    again = try_refresh(second_run, issued)

    assert answer["access_token"]
    assert answer["refresh_token"] != issued
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


def test_a_refresh_token_with_a_forged_signature_or_of_another_client_config_is_refused(
    sandbox: SandboxClient, sandbox_factory: Callable[..., SandboxClient]
) -> None:
    issued = refresh(sandbox)["refresh_token"]
    forged = issued[:-1] + ("0" if issued[-1] != "0" else "1")
    other_clients = sandbox_factory(
        cc_contacts={"clients": [{"client_id": CLIENT[0], "client_secret": "another-secret"}]}
    )

    refused = [
        try_refresh(sandbox, forged),
        try_refresh(sandbox, "sandbox-refresh-made-up"),
        other_clients.http.post(
            "/cc/oauth2/default/v1/token",
            data={"grant_type": "refresh_token", "refresh_token": issued},
            auth=(CLIENT[0], "another-secret"),
        ),
    ]

    assert [(r.status_code, r.json()["error"]) for r in refused] == [(400, "invalid_grant")] * 3
    assert refresh(sandbox, issued)["access_token"]  # the real one still works once


def test_find_by_email_returns_the_contacts_collection(sandbox: SandboxClient) -> None:
    response = sandbox.http.get(
        "/cc/v3/contacts", params={"email": "Debora.Lang@example.com", "status": "all"}, headers=auth(sandbox)
    )
    [contact] = response.json()["contacts"]
    assert contact["contact_id"] == DEBORA
    assert contact["email_address"]["address"] == "debora.lang@example.com"
    assert "phone_numbers" not in contact  # sub-resources only with include=


def test_the_search_includes_exactly_the_sub_resources_it_is_asked_for_as_the_get_does(
    sandbox: SandboxClient,
) -> None:
    headers = auth(sandbox)
    params = {"email": "debora.lang@example.com", "status": "all"}
    searched = sandbox.http.get("/cc/v3/contacts", params={**params, "include": INCLUDE}, headers=headers)
    [whole] = searched.json()["contacts"]
    by_id = sandbox.http.get(f"/cc/v3/contacts/{DEBORA}", params={"include": INCLUDE}, headers=headers).json()
    [some] = sandbox.http.get(
        "/cc/v3/contacts", params={**params, "include": "phone_numbers,taggings"}, headers=headers
    ).json()["contacts"]

    assert whole == by_id
    assert whole["phone_numbers"][0]["phone_number"] == "+1-555-0100"
    assert whole["custom_fields"]
    assert whole["list_memberships"]
    subresources = set(INCLUDE.split(","))
    assert subresources & set(some) == {"phone_numbers", "taggings"}


def test_a_search_naming_an_unknown_sub_resource_is_refused(sandbox: SandboxClient) -> None:
    params = {"email": "debora.lang@example.com", "include": "sms"}
    response = sandbox.http.get("/cc/v3/contacts", params=params, headers=auth(sandbox))
    assert response.status_code == 400


def test_an_unknown_email_is_simply_not_found(sandbox: SandboxClient) -> None:
    headers = auth(sandbox)
    response = sandbox.http.get("/cc/v3/contacts", params={"email": "nobody@nowhere.test"}, headers=headers)
    assert response.json() == {"contacts": []}
    missing = sandbox.http.get("/cc/v3/contacts/00000000-0000-0000-0000-000000000000", headers=headers)
    assert missing.status_code == 404
    assert missing.json()[0]["error_key"] == "contacts.api.not_found"


def test_status_unsubscribed_lists_only_unsubscribed_contacts(sandbox: SandboxClient) -> None:
    response = sandbox.http.get("/cc/v3/contacts", params={"status": "unsubscribed"}, headers=auth(sandbox))
    emails = [c["email_address"]["address"] for c in response.json()["contacts"]]
    assert emails == ["gone.already@example.com"]


def test_get_then_full_put_unsubscribes_and_keeps_the_data(sandbox: SandboxClient) -> None:
    headers = auth(sandbox)
    contact = sandbox.http.get(
        f"/cc/v3/contacts/{DEBORA}", params={"include": INCLUDE}, headers=headers
    ).json()
    assert contact["phone_numbers"][0]["phone_number"] == "+1-555-0100"
    body = {k: contact[k] for k in ("first_name", "last_name", "job_title", "company_name", "anniversary")}
    body |= {"birthday_month": 11, "birthday_day": 24, "update_source": "Contact"}
    body["email_address"] = {
        "address": contact["email_address"]["address"],
        "permission_to_send": "unsubscribed",
        "opt_out_reason": "No longer interested",
    }
    response = sandbox.http.put(f"/cc/v3/contacts/{DEBORA}", json=body, headers=headers)
    assert response.status_code == 200, response.text
    email = response.json()["email_address"]
    assert (email["permission_to_send"], email["opt_out_source"], email["opt_out_reason"]) == (
        "unsubscribed",
        "Contact",
        "No longer interested",
    )
    state = sandbox.state("cc_contacts")
    assert [(e["email"], e["reason"], e["source"]) for e in state["unsubscribes"]] == [
        ("debora.lang@example.com", "No longer interested", "Contact")
    ]
    assert state["data_loss"] == []
    assert "gone.already@example.com" in state["unsubscribed"]


def test_a_put_without_get_overwrites_the_omitted_fields_with_null(sandbox: SandboxClient) -> None:
    headers = auth(sandbox)
    body = {
        "email_address": {"address": "debora.lang@example.com", "permission_to_send": "unsubscribed"},
        "update_source": "Account",
    }
    assert sandbox.http.put(f"/cc/v3/contacts/{DEBORA}", json=body, headers=headers).status_code == 200
    after = sandbox.http.get(f"/cc/v3/contacts/{DEBORA}", params={"include": INCLUDE}, headers=headers).json()
    assert "first_name" not in after
    assert "last_name" not in after
    assert after["phone_numbers"]  # sub-resources left out of a PUT are kept
    [loss] = sandbox.state("cc_contacts")["data_loss"]
    assert loss["email"] == "debora.lang@example.com"
    assert set(loss["nulled"]) == {
        "first_name",
        "last_name",
        "job_title",
        "company_name",
        "birthday_month",
        "birthday_day",
        "anniversary",
    }


def test_a_put_without_update_source_gets_400(sandbox: SandboxClient) -> None:
    body = {"email_address": {"address": "debora.lang@example.com", "permission_to_send": "unsubscribed"}}
    response = sandbox.http.put(f"/cc/v3/contacts/{DEBORA}", json=body, headers=auth(sandbox))
    assert response.status_code == 400
    assert response.json()[0]["error_key"] == "contacts.api.validation.error"


def test_the_account_cannot_resubscribe_an_unsubscribed_contact(sandbox: SandboxClient) -> None:
    headers = auth(sandbox)
    gone = sandbox.http.get(
        "/cc/v3/contacts", params={"email": "gone.already@example.com", "status": "all"}, headers=headers
    )
    contact_id = gone.json()["contacts"][0]["contact_id"]
    body = {
        "email_address": {"address": "gone.already@example.com", "permission_to_send": "explicit"},
        "update_source": "Account",
    }
    assert sandbox.http.put(f"/cc/v3/contacts/{contact_id}", json=body, headers=headers).status_code == 400


def test_an_expired_contacts_token_gets_401(sandbox: SandboxClient) -> None:
    headers = auth(sandbox)
    sandbox.expire_tokens("cc_contacts")
    response = sandbox.http.get("/cc/v3/contacts", params={"email": "x@example.com"}, headers=headers)
    assert response.status_code == 401


def test_auto_contacts_creates_matching_addresses_on_lookup(sandbox: SandboxClient) -> None:
    sandbox.seed(auto_contacts=r"@load\.example$")
    headers = auth(sandbox)
    found = sandbox.http.get("/cc/v3/contacts", params={"email": "u42@load.example"}, headers=headers).json()
    assert [c["email_address"]["address"] for c in found["contacts"]] == ["u42@load.example"]
    other = sandbox.http.get("/cc/v3/contacts", params={"email": "u42@other.example"}, headers=headers).json()
    assert other == {"contacts": []}

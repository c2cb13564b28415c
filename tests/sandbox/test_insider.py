"""Insider v2 fake: the documents' curl requests and responses."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.sandbox_fixtures import SandboxClient

URL = "/insider/email/v2/unsubscribe"
HEADERS = {"X-PARTNER-NAME": "sandboxbrand", "X-REQUEST-TOKEN": "sandbox-insider-token"}


def post(sb: SandboxClient, body: Any, headers: dict[str, str] = HEADERS) -> httpx.Response:
    return sb.http.post(URL, json=body, headers=headers)


def test_the_documented_global_unsubscribe_answers_ok(sandbox: SandboxClient) -> None:
    body = {
        "emails": ["sample1@useinsider.com", "sample2@useinsider.com"],
        "uploader_email": "sample@useinsider.com",
    }
    response = post(sandbox, body)
    assert (response.status_code, response.json()) == (200, {"statusMessage": "OK"})
    state = sandbox.state("insider")
    assert state["unsubscribed"]["global"] == ["sample1@useinsider.com", "sample2@useinsider.com"]
    assert {(e["email"], e["global"], e["group"]) for e in state["unsubscribes"]} == {
        ("sample1@useinsider.com", True, None),
        ("sample2@useinsider.com", True, None),
    }


def test_the_documented_group_unsubscribe_lands_in_the_group(sandbox: SandboxClient) -> None:
    body = {
        "emails": ["example1@useinsider.com"],
        "is_unsubscribe_group": True,
        "group_name": "newsletter",
        "uploader_email": "example@useinsider.com",
    }
    assert post(sandbox, body).json() == {"statusMessage": "OK"}
    unsubscribed = sandbox.state("insider")["unsubscribed"]
    assert unsubscribed == {"global": [], "groups": {"newsletter": ["example1@useinsider.com"]}}


def test_a_group_name_without_is_unsubscribe_group_is_a_global_unsubscribe(sandbox: SandboxClient) -> None:
    body = {"emails": ["a@example.com"], "group_name": "newsletter", "uploader_email": "ops@example.com"}
    assert post(sandbox, body).status_code == 200
    assert sandbox.state("insider")["unsubscribed"]["global"] == ["a@example.com"]


def test_more_than_500_emails_or_a_bad_body_gets_bad_request(sandbox: SandboxClient) -> None:
    too_many = {"emails": [f"u{i}@example.com" for i in range(501)], "uploader_email": "ops@example.com"}
    bad = [
        too_many,
        {"emails": "a@example.com", "uploader_email": "ops@example.com"},
        {"emails": ["a@example.com"]},
    ]
    for body in bad:
        response = post(sandbox, body)
        assert (response.status_code, response.json()) == (400, {"statusMessage": "Bad request"})
    assert sandbox.state("insider")["rejected"] == {"unsubscribe": {"400": 3}}


def test_an_uppercase_partner_name_gets_bad_request(sandbox: SandboxClient) -> None:
    headers = {**HEADERS, "X-PARTNER-NAME": "SandboxBrand"}
    response = post(sandbox, {"emails": ["a@example.com"], "uploader_email": "ops@example.com"}, headers)
    assert response.status_code == 400


def test_a_bad_token_gets_unauthorized(sandbox: SandboxClient) -> None:
    headers = {**HEADERS, "X-REQUEST-TOKEN": "a1b2c3d4e5f6"}
    response = post(sandbox, {"emails": ["a@example.com"], "uploader_email": "ops@example.com"}, headers)
    assert (response.status_code, response.json()) == (401, {"statusMessage": "Unauthorized"})

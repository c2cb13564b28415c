"""WhatCounts api_web fake: the exact texts of the vendor's Unsubscribe page."""

from __future__ import annotations

from tests.support.sandbox_fixtures import SandboxClient

API = "/whatcounts/bin/api_web"


def call(sb: SandboxClient, query: str) -> str:
    response = sb.http.get(f"{API}?{query}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_the_documented_list_unsubscribe_answers_the_documented_success(sandbox: SandboxClient) -> None:
    text = call(
        sandbox,
        "r=sandbox-realm&p=sandbox-pass&c=unsub&list_id=5&optout=1&data=email,first^jane@domain.com,Jane",
    )
    assert text == (
        "SUCCESS: 1 record(s) processed. 1 users unsubscribed from list(s) 5 "
        "(1 total contacts), Records Failed Other Error 0"
    )
    [event] = sandbox.unsubscribes("whatcounts")
    assert {k: event[k] for k in ("realm", "email", "list_id", "global", "optout", "was_member")} == {
        "realm": "sandbox-realm",
        "email": "jane@domain.com",
        "list_id": "5",
        "global": False,
        "optout": True,
        "was_member": True,
    }


def test_the_documented_global_opt_out_answers_list_zero(sandbox: SandboxClient) -> None:
    text = call(
        sandbox,
        "r=sandbox-realm&p=sandbox-pass&c=unsubscribe&list_id=0&optout=1"
        "&data=email,first ^jane@domain.com,Jayne",
    )
    assert text == (
        "SUCCESS: 1 record(s) processed. 1 users unsubscribed from list(s) 0 "
        "(1 total contacts), Records Failed Other Error 0"
    )
    realm = sandbox.state("whatcounts")["realms"]["sandbox-realm"]
    assert realm["optouts"] == {"0": ["jane@domain.com"]}
    assert realm["members"] == {"5": 2, "7": 1}  # jane left both lists


def test_a_batch_counts_a_failing_record_without_naming_it(sandbox: SandboxClient) -> None:
    data = "email,first^jane@domain.com,Jayne^jane.doe@domain.com,Jane^not-an-address,Jane"
    text = call(sandbox, f"r=sandbox-realm&p=sandbox-pass&c=unsubscribe&list_id=5&data={data}")
    assert text == (
        "SUCCESS: 3 record(s) processed. 2 users unsubscribed from list(s) 5 "
        "(2 total contacts), Records Failed Other Error 1"
    )
    assert sorted(e["email"] for e in sandbox.unsubscribes("whatcounts")) == [
        "jane.doe@domain.com",
        "jane@domain.com",
    ]


def test_an_address_not_on_the_list_is_processed_but_not_counted(sandbox: SandboxClient) -> None:
    text = call(sandbox, "r=sandbox-realm&p=sandbox-pass&c=unsub&list_id=5&data=email^stranger@domain.com")
    assert text.startswith("SUCCESS: 1 record(s) processed. 0 users unsubscribed from list(s) 5 (0 total")
    [event] = sandbox.unsubscribes("whatcounts")
    assert (event["email"], event["was_member"]) == ("stranger@domain.com", False)


def test_a_post_form_body_works_like_the_query_string(sandbox: SandboxClient) -> None:
    form = {
        "cmd": "unsub",
        "realm": "sandbox-realm",
        "pwd": "sandbox-pass",
        "list_id": "5",
        "data": "email^john.smith@domain.com",
    }
    response = sandbox.http.post(API, data=form)
    assert response.text.startswith("SUCCESS: 1 record(s) processed. 1 users unsubscribed")


def test_a_customer_key_realm_refuses_data_without_customer_key(sandbox: SandboxClient) -> None:
    text = call(sandbox, "r=ck-realm&p=ck-pass&c=unsub&list_id=7&data=email^jane@domain.com")
    assert text.startswith("FAILURE: ")
    assert "Customer Key" in text
    assert sandbox.state("whatcounts")["rejected"] == {"unsubscribe": {"FAILURE": 1}}


def test_a_customer_key_realm_unsubscribes_with_the_documented_key_first_data(sandbox: SandboxClient) -> None:
    text = call(
        sandbox, "r=ck-realm&p=ck-pass&c=unsubscribe&list_id=7&data=customer_key,email^11293,jane@domain.com"
    )
    assert text.startswith("SUCCESS: 1 record(s) processed. 1 users unsubscribed from list(s) 7")
    assert sandbox.unsubscribes("whatcounts")[0]["customer_key"] == "11293"


def test_records_with_an_empty_or_wrong_customer_key_count_as_failed(sandbox: SandboxClient) -> None:
    data = "email,customer_key^jane@domain.com,^kim@domain.com,99999^kim@domain.com,11294"
    text = call(sandbox, f"r=ck-realm&p=ck-pass&c=unsub&list_id=7&data={data}")
    assert text.endswith(
        "1 users unsubscribed from list(s) 7 (1 total contacts), Records Failed Other Error 2"
    )


def test_every_record_failing_gives_the_documented_failure_with_counts(sandbox: SandboxClient) -> None:
    text = call(sandbox, "r=sandbox-realm&p=sandbox-pass&c=unsub&list_id=5&data=email^bad")
    assert text == (
        "FAILURE: 1 record(s) processed. 0 users unsubscribed from list(s) 5 "
        "(0 total contacts), Records Failed Other Error 1"
    )


def test_a_bad_realm_or_password_or_list_gets_the_documented_failure(sandbox: SandboxClient) -> None:
    assert call(sandbox, "r=nope&p=x&c=unsub&list_id=5&data=email^a@b.com") == (
        "FAILURE: Unable to determine customer account (realm)"
    )
    wrong = call(sandbox, "r=sandbox-realm&p=wrong&c=unsub&list_id=5&data=email^a@b.com")
    assert wrong.startswith(
        "FAILURE: Password (wrong) doesn't match entry for API user credentials in database or "
    )
    assert wrong.endswith(" isn't an approved IP")
    assert call(sandbox, "r=sandbox-realm&p=sandbox-pass&c=unsub&list_id=99&data=email^a@b.com") == (
        "FAILURE: Error looking up list ids, one or more list ids specified do not belong to your realm"
    )
    assert sandbox.unsubscribes("whatcounts") == []

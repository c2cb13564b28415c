"""Edges of the adapters that only a real server shows: URL lengths, POST forms, stale caches, settings
the provider refuses. Each test checks what the sandbox recorded."""

from __future__ import annotations

import pytest
import redis

from tests.support.sandbox_fixtures import SandboxClient
from tests.worker.adapters.sandbox_support import adapter_for, deliver, emails_of, record
from worker import keys
from worker.adapters import AdapterDeps, OutcomeKind
from worker.adapters.easytools import email_field

DELIVERED = OutcomeKind.DELIVERED


def test_a_whatcounts_batch_longer_than_one_url_goes_out_as_several_gets_within_the_limit(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    emails = [f"reader.number.{i:03d}@example.com" for i in range(120)]

    with adapter_for(sandbox, "whatcounts", deps, max_url_length=1000) as adapter:
        outcomes = deliver(adapter, [record(e, "list:5") for e in emails])

    assert [o.kind for o in outcomes] == [DELIVERED] * 120
    state = sandbox.state("whatcounts")
    assert state["requests"]["unsubscribe"] >= 120 * 30 // 1000  # several calls, none refused
    assert state["rejected_total"] == 0
    assert sorted(set(emails_of(state["unsubscribes"]))) == emails


def test_whatcounts_use_post_sends_the_whole_batch_in_one_form(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    emails = [f"reader.number.{i:03d}@example.com" for i in range(120)]

    with adapter_for(sandbox, "whatcounts", deps, use_post=True) as adapter:
        outcomes = deliver(adapter, [record(e, "list:5") for e in emails])

    assert [o.kind for o in outcomes] == [DELIVERED] * 120
    state = sandbox.state("whatcounts")
    assert state["requests"] == {"unsubscribe": 1}
    assert emails_of(state["unsubscribes"]) == emails


def test_a_list_outside_the_realm_is_dead_for_every_record_without_splitting(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "whatcounts", deps) as adapter:
        outcomes = deliver(adapter, [record(f"u{i}@example.com", "list:99") for i in range(6)])

    assert {(o.kind, o.reason) for o in outcomes} == {(OutcomeKind.DEAD, "rejected_by_provider")}
    assert sandbox.state("whatcounts")["requests"] == {"unsubscribe": 1}


def test_a_customer_key_realm_configured_without_keys_stops_the_connection(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "whatcounts", deps, realm="ck-realm", password="ck-pass") as adapter:
        outcomes = deliver(adapter, [record("kim@domain.com", "list:7"), record("jane@domain.com", "list:7")])

    assert {(o.kind, o.reason) for o in outcomes} == {(OutcomeKind.REAUTH, "auth_failed")}
    state = sandbox.state("whatcounts")
    assert state["requests"] == {"unsubscribe": 1}
    assert state["unsubscribes"] == []


def test_a_stale_cached_easytools_uuid_is_dropped_and_looked_up_again(
    sandbox: SandboxClient, deps: AdapterDeps, redis_client: redis.Redis
) -> None:
    cache = keys.contact_cache("easytools")
    redis_client.hset(cache, email_field("anna@example.com"), "00000000-0000-4000-8000-000000000000")

    with adapter_for(sandbox, "easytools", deps) as adapter:
        outcomes = deliver(adapter, [record("anna@example.com")])

    assert [o.kind for o in outcomes] == [DELIVERED]
    state = sandbox.state("easytools")
    assert state["requests"] == {"unsubscribe": 2, "find_contact": 1}
    assert state["unsubscribed"] == ["anna@example.com"]
    assert redis_client.hget(cache, email_field("anna@example.com")) == "6fa459ea-ee8a-3ca4-894e-db77e160355e"


@pytest.mark.parametrize("group", ["ab", "g" * 30])
def test_an_insider_group_name_insider_cannot_take_is_dead_before_any_call(
    sandbox: SandboxClient, deps: AdapterDeps, group: str
) -> None:
    with adapter_for(sandbox, "insider", deps) as adapter:
        outcomes = deliver(adapter, [record(f"u{i}@example.com", f"group:{group}") for i in range(8)])

    assert {(o.kind, o.reason) for o in outcomes} == {(OutcomeKind.DEAD, "unsupported_target")}
    assert sandbox.state("insider")["requests"] == {}


@pytest.mark.parametrize("group", ["news\r\nletter", " newsletter"])
def test_an_insider_group_with_a_line_break_or_edge_space_never_reaches_insider(
    sandbox: SandboxClient, deps: AdapterDeps, group: str
) -> None:
    with adapter_for(sandbox, "insider", deps) as adapter:
        outcomes = deliver(adapter, [record(f"u{i}@example.com", f"group:{group}") for i in range(3)])

    assert {(o.kind, o.reason) for o in outcomes} == {(OutcomeKind.DEAD, "unsupported_target")}
    state = sandbox.state("insider")
    assert state["requests"] == {}
    assert state["unsubscribes"] == []


@pytest.mark.parametrize("target", ["list:00", "list:0", "list"])
def test_a_whatcounts_list_record_without_a_list_id_never_becomes_a_global_opt_out(
    sandbox: SandboxClient, deps: AdapterDeps, target: str
) -> None:
    with adapter_for(sandbox, "whatcounts", deps) as adapter:
        outcomes = deliver(adapter, [record("anna@example.com", target), record("bo@example.com", "list:5")])

    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.DEAD, "no_list_target"), (DELIVERED, None)]
    state = sandbox.state("whatcounts")
    assert state["requests"] == {"unsubscribe": 1}
    assert [(e["email"], e["list_id"], e["global"]) for e in state["unsubscribes"]] == [
        ("bo@example.com", "5", False)
    ]

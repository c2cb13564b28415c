"""Every adapter operation against the real sandbox server: the sandbox's own state says what happened.

Faults, expired tokens, many workers and logs are in ``test_against_sandbox_faults.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.sandbox_fixtures import SandboxClient
from tests.worker.adapters.sandbox_support import adapter_for, deliver, emails_of, record
from worker.adapters import AdapterDeps, OutcomeKind

ACCOUNT = "a07e1lxqqqo0"
DELIVERED = OutcomeKind.DELIVERED
DEAD = OutcomeKind.DEAD

# -- cc_partner -------------------------------------------------------------------------------------


def test_cc_partner_unsubscribes_a_batch_in_the_account_in_one_call(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    emails = [f"lang.carry{i}@anymail.com" for i in range(5)]
    records = [record(e, source="Account", reason="Lost interest") for e in emails]

    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        outcomes = deliver(adapter, records)

    assert [o.kind for o in outcomes] == [DELIVERED] * 5
    state = sandbox.state("cc_partner")
    assert state["requests"] == {"token": 1, "unsubscribe": 1}
    assert state["unsubscribed"] == {ACCOUNT: sorted(emails)}
    assert {(e["reason"], e["source"], e["global"]) for e in state["unsubscribes"]} == {
        ("Lost interest", "Account", False)
    }


def test_cc_partner_global_unsubscribe_carries_one_address_a_call(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    emails = ["one@example.com", "two@example.com", "three@example.com"]

    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        outcomes = deliver(adapter, [record(e, "all_accounts") for e in emails])

    assert [o.kind for o in outcomes] == [DELIVERED] * 3
    state = sandbox.state("cc_partner")
    assert state["requests"]["unsubscribe"] == 3
    assert state["rejected_total"] == 0
    assert state["unsubscribed"] == {"*": sorted(emails)}
    assert all(e["global"] for e in state["unsubscribes"])


# -- cc_contacts ------------------------------------------------------------------------------------

ANN_ID = "5e0c1a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
ANN: dict[str, Any] = {
    "contact_id": ANN_ID,
    "email": "ann.lee@example.com",
    "first_name": "Ann",
    "last_name": "Lee",
    "job_title": "Pilot",
    "company_name": "Skyways",
    "birthday_month": 3,
    "birthday_day": 14,
    "anniversary": "2012-06-01",
    "permission_to_send": "explicit",
    "phone_numbers": [{"phone_number": "+1-555-0102", "kind": "home"}],
    "street_addresses": [{"kind": "home", "street": "1 Main St", "city": "Springfield", "country": "US"}],
    "custom_fields": [{"custom_field_id": "9d4e5f60-0000-4000-8000-000000000001", "value": "gold"}],
    "list_memberships": ["07936f78-662a-11eb-af0a-fa163e56c9b0", "17936f78-662a-11eb-af0a-fa163e56c9b1"],
    "taggings": ["3f2a1b0c-0000-4000-8000-0000000000aa"],
}
KEPT = (
    *("first_name", "last_name", "job_title", "company_name", "birthday_month", "birthday_day"),
    *("anniversary", "phone_numbers", "street_addresses", "custom_fields", "list_memberships", "taggings"),
)


def sandbox_contact(sandbox: SandboxClient, contact_id: str) -> dict[str, Any]:
    found = sandbox.server.sandbox.cc_contacts.contact(contact_id)
    assert found is not None
    return found


@pytest.mark.parametrize("reason", ["Asked by phone", None])
def test_cc_contacts_unsubscribes_a_contact_and_keeps_every_other_field(
    sandbox: SandboxClient, deps: AdapterDeps, reason: str | None
) -> None:
    sandbox.seed(cc_contacts={"contacts": [ANN]})

    with adapter_for(sandbox, "cc-contacts", deps) as adapter:
        outcomes = deliver(adapter, [record("Ann.Lee@example.com", reason=reason)])

    assert [o.kind for o in outcomes] == [DELIVERED]
    contact = sandbox_contact(sandbox, ANN_ID)
    assert {name: contact[name] for name in KEPT} == {name: ANN[name] for name in KEPT}
    assert contact["email_address"]["permission_to_send"] == "unsubscribed"
    assert contact["email_address"]["opt_out_reason"] == reason
    assert contact["email_address"]["opt_out_source"] == "Contact"
    state = sandbox.state("cc_contacts")
    assert state["data_loss"] == []
    # Two calls a contact: the search answers with the whole contact (include=), then the PUT.
    assert state["requests"] == {"token": 1, "find_contact": 1, "put_contact": 1}
    assert [(e["contact_id"], e["reason"]) for e in state["unsubscribes"]] == [(ANN_ID, reason)]


@pytest.mark.parametrize("by_id", [False, True], ids=["found_by_search", "known_contact_id"])
def test_cc_contacts_keeps_notes_and_every_sub_resource_whether_searched_or_read_by_id(
    sandbox: SandboxClient, deps: AdapterDeps, by_id: bool
) -> None:
    notes = [{"note_id": "n-1", "created_at": "2024-01-03T00:00:00Z", "content": "prefers post"}]
    sandbox.seed(cc_contacts={"contacts": [{**ANN, "notes": notes}]})
    fields = {"contact_id": ANN_ID} if by_id else {}

    with adapter_for(sandbox, "cc-contacts", deps) as adapter:
        outcomes = deliver(adapter, [record("ann.lee@example.com", **fields)])

    assert [o.kind for o in outcomes] == [DELIVERED]
    contact = sandbox_contact(sandbox, ANN_ID)
    assert {name: contact[name] for name in KEPT} == {name: ANN[name] for name in KEPT}
    assert contact["notes"] == notes
    assert contact["email_address"]["permission_to_send"] == "unsubscribed"
    state = sandbox.state("cc_contacts")
    assert state["data_loss"] == []
    read = "get_contact" if by_id else "find_contact"
    assert state["requests"] == {"token": 1, read: 1, "put_contact": 1}


def test_cc_contacts_keeps_the_seeded_contacts_names_phones_lists_and_custom_field(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    debora_id = "1618ae62-4752-11e9-9c8a-fa163e6b01c1"
    before = sandbox_contact(sandbox, debora_id)

    with adapter_for(sandbox, "cc-contacts", deps) as adapter:
        outcomes = deliver(adapter, [record("debora.lang@example.com", source="System")])

    assert [o.kind for o in outcomes] == [DELIVERED]
    after = sandbox_contact(sandbox, debora_id)
    for name in ("first_name", "last_name", "job_title", "company_name", "birthday_month", "anniversary"):
        assert after[name] == before[name], name
    assert after["list_memberships"] == before["list_memberships"]
    assert after["custom_fields"] == before["custom_fields"]
    assert [(p["phone_number"], p["kind"]) for p in after["phone_numbers"]] == [("+1-555-0100", "home")]
    assert after["email_address"]["permission_to_send"] == "unsubscribed"
    assert after["email_address"]["opt_out_source"] == "Account"  # system-initiated: the account's
    assert sandbox.state("cc_contacts")["data_loss"] == []


def test_an_unknown_cc_contact_is_dead_contact_not_found_and_nothing_is_put(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "cc-contacts", deps) as adapter:
        outcomes = deliver(adapter, [record("nobody.here@example.com")])

    assert [(o.kind, o.reason) for o in outcomes] == [(DEAD, "contact_not_found")]
    state = sandbox.state("cc_contacts")
    assert state["requests"] == {"token": 1, "find_contact": 1}
    assert state["unsubscribes"] == []


def test_an_already_unsubscribed_cc_contact_is_delivered_without_writing_it_again(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "cc-contacts", deps) as adapter:
        outcomes = deliver(adapter, [record("gone.already@example.com")])

    assert [o.kind for o in outcomes] == [DELIVERED]
    state = sandbox.state("cc_contacts")
    assert "put_contact" not in state["requests"]
    assert "gone.already@example.com" in state["unsubscribed"]


# -- whatcounts -------------------------------------------------------------------------------------


def test_whatcounts_takes_a_batch_off_one_list_with_an_opt_out_in_one_call(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    emails = ["jane@domain.com", "john.smith@domain.com", "jane.doe@domain.com"]

    with adapter_for(sandbox, "whatcounts", deps) as adapter:
        outcomes = deliver(adapter, [record(e, "list:5") for e in emails])

    assert [o.kind for o in outcomes] == [DELIVERED] * 3
    state = sandbox.state("whatcounts")
    assert state["requests"] == {"unsubscribe": 1}
    realm = state["realms"]["sandbox-realm"]
    assert realm["members"] == {"5": 0, "7": 2}  # jane stays on list 7
    assert realm["optouts"] == {"5": sorted(emails)}
    assert all(e["was_member"] and e["list_id"] == "5" for e in state["unsubscribes"])


def test_whatcounts_global_opt_out_is_list_0_and_leaves_every_list(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "whatcounts", deps) as adapter:
        records = [record("jane@domain.com", "global"), record("jdoe@domain.com", "global")]
        outcomes = deliver(adapter, records)

    assert [o.kind for o in outcomes] == [DELIVERED] * 2
    state = sandbox.state("whatcounts")
    realm = state["realms"]["sandbox-realm"]
    assert realm["optouts"] == {"0": ["jane@domain.com", "jdoe@domain.com"]}
    assert realm["members"] == {"5": 2, "7": 0}
    assert {(e["list_id"], e["global"], e["optout"]) for e in state["unsubscribes"]} == {("0", True, True)}


def test_a_record_without_customer_key_is_dead_before_any_call(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "whatcounts-ck", deps) as adapter:
        outcomes = deliver(adapter, [record("kim@domain.com", "list:7")])

    assert [(o.kind, o.reason) for o in outcomes] == [(DEAD, "missing_customer_key")]
    assert sandbox.state("whatcounts")["requests"] == {}


def test_a_record_with_its_customer_key_is_delivered_in_a_customer_key_realm(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "whatcounts-ck", deps) as adapter:
        outcomes = deliver(adapter, [record("kim@domain.com", "list:7", customer_key="11294")])

    assert [o.kind for o in outcomes] == [DELIVERED]
    state = sandbox.state("whatcounts")
    assert [(e["realm"], e["email"], e["customer_key"], e["was_member"]) for e in state["unsubscribes"]] == [
        ("ck-realm", "kim@domain.com", "11294", True)
    ]
    assert state["realms"]["ck-realm"]["members"] == {"7": 1}


# -- insider ----------------------------------------------------------------------------------------


def test_insider_global_and_group_unsubscribes_land_in_their_lists(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    records = [
        record("a@example.com", "global"),
        record("b@example.com", "group:newsletter"),
        record("c@example.com", "group:promotions"),
        record("d@example.com", "global"),
    ]

    with adapter_for(sandbox, "insider", deps) as adapter:
        outcomes = deliver(adapter, records)

    assert [o.kind for o in outcomes] == [DELIVERED] * 4
    state = sandbox.state("insider")
    assert state["requests"] == {"unsubscribe": 3}  # one call per target
    assert state["unsubscribed"] == {
        "global": ["a@example.com", "d@example.com"],
        "groups": {"newsletter": ["b@example.com"], "promotions": ["c@example.com"]},
    }
    assert {e["uploader_email"] for e in state["unsubscribes"]} == {"ops@example.com"}


# -- easytools --------------------------------------------------------------------------------------

JOHN_UUID = "550e8400-e29b-41d4-a716-446655440000"
ANNA_UUID = "6fa459ea-ee8a-3ca4-894e-db77e160355e"


def test_easytools_unsubscribes_by_the_uuid_given_without_a_search(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "easytools", deps) as adapter:
        outcomes = deliver(adapter, [record("john@example.com", contact_id=JOHN_UUID)])

    assert [o.kind for o in outcomes] == [DELIVERED]
    state = sandbox.state("easytools")
    assert state["requests"] == {"unsubscribe": 1}
    assert [(e["uuid"], e["email"]) for e in state["unsubscribes"]] == [(JOHN_UUID, "john@example.com")]


def test_easytools_finds_the_uuid_once_and_then_uses_the_cached_one(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "easytools", deps) as adapter:
        first = deliver(adapter, [record("Anna@example.com")])
        again = deliver(adapter, [record("anna@example.com")])

    assert [o.kind for o in first + again] == [DELIVERED] * 2
    state = sandbox.state("easytools")
    assert state["requests"] == {"find_contact": 1, "unsubscribe": 2}
    assert state["unsubscribed"] == ["anna@example.com"]
    assert [e["uuid"] for e in state["unsubscribes"]] == [ANNA_UUID]


def test_an_unknown_easytools_address_is_dead_contact_not_found(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "easytools", deps) as adapter:
        outcomes = deliver(adapter, [record("nobody@example.com")])

    assert [(o.kind, o.reason) for o in outcomes] == [(DEAD, "contact_not_found")]
    assert "unsubscribe" not in sandbox.state("easytools")["requests"]


# -- one bad address in a batch ---------------------------------------------------------------------

BAD_BATCH_CASES = [
    pytest.param("cc-partner", "cc_partner", "account", "invalid_email", id="cc_partner"),
    pytest.param("whatcounts", "whatcounts", "list:5", "rejected_by_provider", id="whatcounts"),
    pytest.param("insider", "insider", "group:newsletter", "rejected_by_provider", id="insider"),
]


@pytest.mark.parametrize(("name", "provider", "target", "reason"), BAD_BATCH_CASES)
def test_one_bad_address_in_a_batch_is_dead_and_every_other_is_delivered(
    sandbox: SandboxClient, deps: AdapterDeps, name: str, provider: str, target: str, reason: str
) -> None:
    emails = [f"user{i}@example.com" for i in range(8)]
    emails[5] = "not-an-address"

    with adapter_for(sandbox, name, deps) as adapter:
        outcomes = deliver(adapter, [record(e, target) for e in emails])

    dead = [(e, o.reason) for e, o in zip(emails, outcomes, strict=True) if o.kind is not DELIVERED]
    assert dead == [("not-an-address", reason)]
    good = sorted(set(emails) - {"not-an-address"})
    assert sorted(set(emails_of(sandbox.unsubscribes(provider)))) == good
    assert sandbox.state(provider)["requests"]["unsubscribe"] > 1  # the refused call was split


def test_whatcounts_failures_counted_but_not_named_are_found_by_splitting(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    """Two bad rows (a bad address, a wrong Customer Key): the answers only count them."""
    emails = [f"user{i}@domain.com" for i in range(8)]
    keys = [f"k{i}" for i in range(8)]
    sandbox.seed(
        whatcounts={
            "realms": [
                {
                    "realm": "ck-realm",
                    "password": "ck-pass",
                    "subscribers": [
                        {"email": e, "customer_key": k, "lists": ["7"]}
                        for e, k in zip(emails, keys, strict=True)
                    ],
                }
            ]
        }
    )
    emails[1] = "broken@@domain"
    keys[6] = "wrong-key"

    with adapter_for(sandbox, "whatcounts-ck", deps) as adapter:
        records = [record(e, "list:7", customer_key=k) for e, k in zip(emails, keys, strict=True)]
        outcomes = deliver(adapter, records)

    assert [i for i, o in enumerate(outcomes) if o.kind is DEAD] == [1, 6]
    assert {o.reason for o in outcomes if o.kind is DEAD} == {"rejected_by_provider"}
    state = sandbox.state("whatcounts")
    delivered = {emails[i] for i in (0, 2, 3, 4, 5, 7)}
    assert set(emails_of(state["unsubscribes"])) == delivered
    assert state["realms"]["ck-realm"]["optouts"]["7"] == sorted(delivered)

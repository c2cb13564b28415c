"""One-record providers with their calls overlapped, against the real sandbox server.

Each batch is worked ``parallel_calls`` records at a time (the sandbox answers after a latency, so
the calls really are in flight together); the sandbox's own records show that every contact was
unsubscribed once, nothing else was written, and the threads shared one access token.
"""

from __future__ import annotations

from tests.support.sandbox_fixtures import SandboxClient
from tests.worker.adapters.sandbox_support import adapter_for, deliver, emails_of, record
from worker.adapters import AdapterDeps, OutcomeKind

DELIVERED = OutcomeKind.DELIVERED
DEAD = OutcomeKind.DEAD


def test_cc_contacts_batches_worked_four_at_a_time_unsubscribe_every_contact_and_keep_its_data(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    sandbox.seed(auto_contacts=True)
    sandbox.faults(cc_contacts={"latency_ms": 20})
    emails = [f"reader.{i:02d}@example.com" for i in range(20)]

    with adapter_for(sandbox, "cc-contacts", deps, parallel_calls=4, rate_limit=None) as adapter:
        assert adapter.max_batch_size == 12
        outcomes = deliver(adapter, [record(e, reason="bulk") for e in emails])

    assert [o.kind for o in outcomes] == [DELIVERED] * 20
    state = sandbox.state("cc_contacts")
    assert state["requests"] == {"token": 1, "find_contact": 20, "put_contact": 20}
    assert state["data_loss"] == []
    assert sorted(emails_of(state["unsubscribes"])) == emails
    assert {e["reason"] for e in state["unsubscribes"]} == {"bulk"}
    contact = sandbox.server.sandbox.cc_contacts.contact(state["unsubscribes"][0]["contact_id"])
    assert contact is not None
    assert (contact["first_name"], contact["last_name"]) == (
        "Auto",
        state["unsubscribes"][0]["email"].split("@")[0],
    )


def test_easytools_batches_worked_in_parallel_keep_each_outcome_with_its_record(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    sandbox.faults(easytools={"latency_ms": 20})
    known = ["anna@example.com", "john@example.com"]
    emails = [known[0], "nobody.1@example.com", known[1], "nobody.2@example.com"]

    with adapter_for(sandbox, "easytools", deps, parallel_calls=4) as adapter:
        outcomes = deliver(adapter, [record(e) for e in emails])

    assert [(o.kind, o.reason) for o in outcomes] == [
        (DELIVERED, None),
        (DEAD, "contact_not_found"),
        (DELIVERED, None),
        (DEAD, "contact_not_found"),
    ]
    state = sandbox.state("easytools")
    assert state["requests"] == {"find_contact": 4, "unsubscribe": 2}
    assert sorted(state["unsubscribed"]) == known

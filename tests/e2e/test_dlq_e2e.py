"""Dead letters end to end: records dead for a fixable cause, an operator's look with `unsub dlq`,
the fix, `unsub dlq replay --all --reason ...` as a real command, and delivery at the sandbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.sandbox_fixtures import SandboxClient
from unsub_dev.localstack.stack import LocalStack
from worker.pipeline import deadletters

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 60


def unsub(stack: LocalStack, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `unsub ...` as an operator would, against the stack's config."""
    env = {**os.environ, "UNSUB_CONFIG": str(stack.config_path), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


def jsonl(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def dead_now(stack: LocalStack, reason: str | None = None) -> list[deadletters.DeadLetter]:
    return list(deadletters.scan(stack.redis, deadletters.Filter(reason=reason)))


def test_replaying_dead_letters_after_fixing_their_cause_delivers_them_and_empties_the_store(
    stack: LocalStack, sandbox: SandboxClient, tmp_path: Path
) -> None:
    sandbox.seed(auto_contacts=r"@example\.com$")  # easy.tools knows no @unknown.org contact yet
    stack.start_worker("w1", concurrency=2)
    stack.start_scheduler()
    keyless = [f"keyless{i}@example.com" for i in range(4)]
    strangers = [f"stranger{i}@unknown.org" for i in range(3)]
    with stack.producer() as producer:
        ids = producer.publish_many({"email": e, "connections": ["whatcounts-ck"]} for e in keyless)
        ids += producer.publish_many({"email": e, "connections": ["easytools"]} for e in strangers)
    stack.wait_settled(expected_requests=len(ids), timeout_s=90)

    # What an operator sees before the fix.
    listed = unsub(stack, "dlq", "list", "--reason", "missing_customer_key", "--json")
    assert listed.returncode == 0, listed.stderr
    shown_list = jsonl(listed.stdout)
    assert len(shown_list) == 4
    assert {row["connection"] for row in shown_list} == {"whatcounts-ck"}
    assert all("email" not in row for row in shown_list)  # masked only
    one = unsub(stack, "dlq", "show", str(shown_list[0]["id"]))
    assert one.returncode == 0, one.stderr
    detail = json.loads(one.stdout)
    assert detail["reason"] == "missing_customer_key"
    assert detail["email_masked"].startswith("k")
    assert "keyless" not in one.stdout  # the full address needs --reveal
    exported = unsub(stack, "dlq", "export", "--format", "jsonl", "--reveal")
    assert exported.returncode == 0, exported.stderr
    rows = jsonl(exported.stdout)
    assert sorted((r["reason"], r["email"]) for r in rows) == sorted(
        [("missing_customer_key", e) for e in keyless] + [("contact_not_found", e) for e in strangers]
    )
    assert "exported 7 dead letter(s)" in exported.stderr

    # Fix one cause: the Customer Keys are now known. Replay only that reason.
    keys_csv = tmp_path / "keys.csv"
    keys_csv.write_text("email,customer_key\n" + "".join(f"{e},ck-{i}\n" for i, e in enumerate(keyless)))
    replayed = unsub(
        stack, "dlq", "replay", "--all", "--reason", "missing_customer_key", "--customer-keys", str(keys_csv)
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 4 dead letter(s)" in replayed.stdout
    snap = stack.wait_settled(timeout_s=90)

    ck_events = [e for e in sandbox.unsubscribes("whatcounts") if e["realm"] == "ck-realm"]
    assert sorted((e["email"], e["customer_key"]) for e in ck_events) == [
        (e, f"ck-{i}") for i, e in enumerate(keyless)
    ]
    assert dead_now(stack, "missing_customer_key") == []
    assert sorted(d.email or "" for d in dead_now(stack)) == strangers  # the other cause is untouched
    ck = next(c for c in snap.connections if c.name == "whatcounts-ck")
    assert (ck.counters.get("replayed"), ck.counters.get("delivered")) == (4, 4)

    # Fix the other cause: the contacts now exist at easy.tools.
    sandbox.seed(easytools={"contacts": [{"email": e} for e in strangers]})
    replayed = unsub(
        stack, "dlq", "replay", "--all", "--connection", "easytools", "--reason", "contact_not_found"
    )
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 3 dead letter(s)" in replayed.stdout
    snap = stack.wait_settled(timeout_s=90)

    assert sorted(sandbox.state("easytools")["unsubscribed"]) == strangers
    assert dead_now(stack) == []
    assert snap.dead_letters_now == 0
    assert unsub(stack, "dlq", "list", "--json").stdout.strip() == ""
    easy = next(c for c in snap.connections if c.name == "easytools")
    assert easy.counters.get("delivered") == 3

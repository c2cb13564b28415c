"""Failure handling end to end: real worker processes against the sandbox's fault injection.

Outages, a permanent refusal, Retry-After, shared rate limits, 30 % errors and refused credentials,
each checked from the provider's side (the sandbox's state and request log) and from the system's
counters, dead letters and retry sets. Time is compressed by the fast timings of
``unsub_dev/localstack/config.py`` (cool-downs of seconds, not minutes).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from tests.support.sandbox_fixtures import SandboxClient
from tests.support.stacks import StackFactory, set_connection
from tests.support.waiting import wait_for
from unsub_dev.localstack.stack import LocalStack
from worker import keys
from worker.pipeline import deadletters, status
from worker.pipeline.stats import ConnectionStats, Snapshot
from worker.records import DeliveryRecord

pytestmark = pytest.mark.integration


# -- helpers -----------------------------------------------------------------------------------


def conn_stats(snap: Snapshot, name: str) -> ConnectionStats:
    return next(c for c in snap.connections if c.name == name)


def counter(snap: Snapshot, name: str, which: str) -> int:
    return conn_stats(snap, name).counters.get(which, 0)


def provider_requests(sandbox: SandboxClient, provider: str) -> list[dict[str, Any]]:
    """Every request the provider saw, in arrival order: operation, at, status, retry_after."""
    answer = sandbox.http.get("/_sandbox/requests", params={"provider": provider})
    assert answer.status_code == 200, answer.text
    return answer.json()["requests"]  # type: ignore[no-any-return]


def busiest_window(times: Iterable[float], window_s: float) -> int:
    """The most requests inside any window of ``window_s`` seconds (sliding, half-open)."""
    ordered = sorted(times)
    most = start = 0
    for end, t in enumerate(ordered):
        while t - ordered[start] >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


def publish(stack: LocalStack, requests: list[dict[str, Any]]) -> list[str]:
    with stack.producer() as producer:
        return producer.publish_many(requests)


def emails(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i}@example.com" for i in range(n)]


def delivery_statuses(stack: LocalStack, ids: list[str], connection: str) -> list[status.DeliveryStatus]:
    found = []
    for request_id in ids:
        request = status.read(stack.redis, request_id)
        assert request is not None, request_id
        found += [d for d in request.deliveries if d.connection == connection]
    return found


def log_events(stack: LocalStack) -> list[dict[str, Any]]:
    """The JSON log lines of every process of the stack."""
    events = []
    for line in stack.logs().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def letters(stack: LocalStack) -> list[deadletters.DeadLetter]:
    return list(deadletters.scan(stack.redis, deadletters.Filter()))


def start(stack: LocalStack, *, workers: int = 1, concurrency: int = 2) -> None:
    for n in range(workers):
        stack.start_worker(f"w{n + 1}", concurrency=concurrency)
    stack.start_scheduler()


# -- 1. an outage ------------------------------------------------------------------------------


def test_a_compressed_ten_minute_outage_ends_with_everything_delivered_and_nothing_dead(
    stack: LocalStack, sandbox: SandboxClient
) -> None:
    start(stack)
    outage_s = 10.0
    sandbox.faults(insider={"outage_for_s": outage_s, "outage_status": 502})
    addresses = emails("outage", 30)
    ids = publish(stack, [{"email": e, "connections": ["insider", "cc-partner"]} for e in addresses])

    opened = wait_for(
        lambda: conn_stats(stack.snapshot(), "insider").breaker == "open",
        timeout_s=30,
        message="the insider breaker to open during the outage",
    )
    assert opened
    snap = stack.wait_settled(expected_requests=len(ids), timeout_s=120)

    assert snap.dead_letters_now == 0, letters(stack)
    assert counter(snap, "insider", "delivered") == 30
    assert counter(snap, "cc-partner", "delivered") == 30
    assert sorted(sandbox.state("insider")["unsubscribed"]["global"]) == sorted(addresses)
    opened_times = counter(snap, "insider", "breaker_opened")
    assert opened_times >= 1
    # Records waited in the buffer while the breaker was open (drains skip an open connection)...
    threshold = stack.settings.connection("insider").breaker.failure_threshold
    attempts = [d.attempts for d in delivery_statuses(stack, ids, "insider")]
    # ...without spending attempts: at most the failures that opened it, one per probe, the success.
    assert max(attempts) <= threshold + opened_times + 1, attempts
    assert max(attempts) < stack.settings.connection("insider").retry.max_attempts
    assert counter(snap, "cc-partner", "breaker_opened") == 0  # the other connection was unaffected
    outage_calls = [c for c in provider_requests(sandbox, "insider") if c["status"] == 502]
    assert outage_calls, "the outage was never hit"
    print(f"outage {outage_s}s: {len(outage_calls)} failed calls, opened {opened_times}x")


# -- 2. a permanent refusal of one address -----------------------------------------------------


def test_a_permanent_400_on_one_address_dead_letters_exactly_that_one(
    stack: LocalStack, sandbox: SandboxClient
) -> None:
    refused = "refused.person@example.com"
    sandbox.faults(
        insider={"refuse_emails": r"^refused\."},
        cc_partner={"refuse_emails": r"^refused\."},
        whatcounts={"refuse_emails": r"^refused\."},
    )
    sandbox.seed(auto_contacts=True)
    start(stack)
    addresses = [*emails("fine", 24), refused]
    targets = ["insider", "cc-partner", "whatcounts"]
    ids = publish(stack, [{"email": e, "connections": targets} for e in addresses])
    snap = stack.wait_settled(expected_requests=len(ids), timeout_s=120)

    dead = letters(stack)
    assert sorted((d.connection, d.email, d.reason) for d in dead) == [
        (name, refused, "rejected_by_provider") for name in sorted(targets)
    ]
    assert {d.status for d in dead if d.connection != "whatcounts"} == {400}
    for name in targets:
        assert counter(snap, name, "delivered") == 24
    assert sorted(sandbox.state("insider")["unsubscribed"]["global"]) == sorted(emails("fine", 24))
    assert sorted(sandbox.state("cc_partner")["unsubscribed"]["a07e1lxqqqo0"]) == sorted(emails("fine", 24))
    assert refused not in {e["email"] for e in sandbox.unsubscribes("whatcounts")}


# -- 3. Retry-After ----------------------------------------------------------------------------


def test_the_next_request_after_a_429_comes_no_earlier_than_its_retry_after(
    stack_factory: StackFactory, sandbox: SandboxClient
) -> None:
    # One request at a time, so "the next request" is well defined: one worker process, and easy.tools
    # without parallel calls (a call already on the wire when a 429 arrives cannot be recalled).
    stack = stack_factory(config_hook=set_connection("easytools", parallel_calls=1))
    sandbox.seed(auto_contacts=True)
    stack.start_worker("w1", concurrency=1)
    stack.start_scheduler()
    sandbox.faults(
        insider={"outage_for_s": 3, "outage_status": 429},
        easytools={"error_rate": 0.3, "error_status": 429, "seed": 3, "rate_limit_per_minute": 0},
    )
    addresses = emails("patient", 12)
    ids = publish(stack, [{"email": e, "connections": ["insider"]} for e in addresses])
    wait_for(lambda: provider_requests(sandbox, "insider"), timeout_s=30, message="insider called")
    ids += publish(stack, [{"email": e, "connections": ["easytools"]} for e in addresses])
    snap = stack.wait_settled(expected_requests=len(ids), timeout_s=120)

    assert snap.dead_letters_now == 0, letters(stack)
    for provider, name in (("insider", "insider"), ("easytools", "easytools")):
        calls = provider_requests(sandbox, provider)
        limited = [(i, c) for i, c in enumerate(calls) if c["status"] == 429]
        assert limited, f"{provider} never answered 429: {calls}"
        for index, call in limited:
            not_before = call["at"] + float(call["retry_after"])
            early = [c for c in calls[index + 1 :] if c["at"] < not_before]
            assert not early, f"{provider}: {len(early)} request(s) before Retry-After ended: {call} {early}"
        assert counter(snap, name, "delivered") == 12
        assert counter(snap, name, "throttled_429") >= len(limited)
    # 429s spend no attempt: every record was delivered on its first counted attempt.
    assert {d.attempts for d in delivery_statuses(stack, ids, "insider")} == {1}


# -- 4. a shared rate limit --------------------------------------------------------------------


def test_several_workers_together_never_exceed_a_connections_rate_limit_and_absorb_429s(
    stack_factory: StackFactory, sandbox: SandboxClient
) -> None:
    per_second = 20

    def limit(data: dict[str, Any]) -> None:
        set_connection("easytools", rate_limit=f"{per_second}/second")(data)

    stack = stack_factory(config_hook=limit)
    sandbox.seed(auto_contacts=True)
    sandbox.faults(easytools={"rate_limit_per_minute": 0, "error_rate": 0.1, "error_status": 429, "seed": 5})
    start(stack, workers=2, concurrency=2)
    addresses = emails("limited", 90)
    ids = publish(stack, [{"email": e, "connections": ["easytools"]} for e in addresses])
    snap = stack.wait_settled(expected_requests=len(ids), timeout_s=180)

    calls = provider_requests(sandbox, "easytools")
    busiest = busiest_window((c["at"] for c in calls), 1.0)
    assert busiest <= per_second, f"{busiest} requests inside one second (limit {per_second})"
    assert len(calls) >= 2 * len(addresses)  # a lookup and an unsubscribe each, plus retries
    assert any(c["status"] == 429 for c in calls)
    assert snap.dead_letters_now == 0, letters(stack)
    assert counter(snap, "easytools", "delivered") == len(addresses)
    assert sorted(sandbox.state("easytools")["unsubscribed"]) == sorted(addresses)
    span = calls[-1]["at"] - calls[0]["at"]
    print(f"rate limit {per_second}/s: {len(calls)} requests in {span:.1f}s, busiest second {busiest}")


# -- 5. errors everywhere, one provider down ---------------------------------------------------


def test_with_thirty_percent_errors_and_one_provider_down_every_record_ends_true_and_in_time(
    stack_factory: StackFactory, sandbox: SandboxClient
) -> None:
    short_age_s = 8.0

    def ages(data: dict[str, Any]) -> None:
        set_connection("insider", retry={"max_age_s": short_age_s})(data)

    stack = stack_factory(config_hook=ages)
    sandbox.seed(auto_contacts=True)
    sandbox.faults(**{"*": {"error_rate": 0.3, "error_status": 503, "seed": 11}})
    sandbox.faults(insider={"outage_for_s": 600, "outage_status": 502})
    start(stack, workers=1, concurrency=2)
    with_key = [{"email": e, "customer_key": f"ck-{i}"} for i, e in enumerate(emails("keyed", 15))]
    without_key = [{"email": e} for e in emails("keyless", 5)]
    ids = publish(stack, with_key + without_key)

    deadline_breaches: list[str] = []

    def settled_watching_deadlines() -> Snapshot | None:
        for conn in stack.settings.connections:
            for member, due in stack.redis.zrange(keys.retry_zset(conn.name), 0, -1, withscores=True):
                record = DeliveryRecord.model_validate_json(member)
                if due > record.accepted_at + conn.retry.max_age_s + 0.001:
                    deadline_breaches.append(f"{conn.name}: due {due - record.accepted_at:.1f}s after accept")
        snap = stack.snapshot()
        return snap if stack.is_settled(snap, len(ids)) and stack.queued_messages() == 0 else None

    wait_for(settled_watching_deadlines, timeout_s=180, interval_s=0.2, message="settled")
    snap = stack.wait_settled(expected_requests=len(ids), timeout_s=60)  # and still settled
    assert not deadline_breaches, deadline_breaches[:5]

    dead = letters(stack)
    by_reason = {(d.connection, d.reason) for d in dead}
    assert by_reason == {("whatcounts-ck", "missing_customer_key"), ("insider", "retries_exhausted")}
    assert sorted(d.email for d in dead if d.connection == "whatcounts-ck") == emails("keyless", 5)
    down = [d for d in dead if d.connection == "insider"]
    assert len(down) == 20
    # Due at its deadline at the latest (checked above); then it waits only for a free worker, which
    # a drain of another connection holds for at most drain_budget_s (two processes, six connections).
    settings = stack.settings
    slack_s = 2 * settings.drain_budget_s + 2 * settings.flush_interval_s
    for letter in down:
        assert "maximum age" in letter.message
        assert letter.first_attempt_at is not None
        record = DeliveryRecord.model_validate(letter.record)
        late_s = letter.dead_at - (record.accepted_at + short_age_s)
        assert late_s < slack_s, f"dead-lettered {late_s:.1f}s after its maximum age"
    for name in ("cc-partner", "cc-contacts", "whatcounts", "easytools"):
        assert counter(snap, name, "delivered") == 20, (name, conn_stats(snap, name), snap.intake)
    assert counter(snap, "whatcounts-ck", "delivered") == 15
    assert sorted(sandbox.state("cc_partner")["unsubscribed"]["a07e1lxqqqo0"]) == sorted(
        emails("keyed", 15) + emails("keyless", 5)
    )
    assert sandbox.unsubscribes("insider") == []
    assert snap.dead_letters_now == 25
    retried = sum(c.counters.get("retried", 0) for c in snap.connections)
    opened = sum(c.counters.get("breaker_opened", 0) for c in snap.connections)
    print(f"30 % errors: {retried} retries, breakers opened {opened}x")


# -- 7. refused credentials --------------------------------------------------------------------


def test_a_bad_client_secret_opens_the_breaker_keeps_the_records_and_a_fixed_secret_delivers_them(
    stack_factory: StackFactory, sandbox: SandboxClient
) -> None:
    def bad_secret(data: dict[str, Any]) -> None:
        set_connection("cc-partner", client_secret="not-the-secret")(data)

    stack = stack_factory(config_hook=bad_secret)
    start(stack)
    addresses = emails("authless", 10)
    ids = publish(stack, [{"email": e, "connections": ["cc-partner", "insider"]} for e in addresses])

    def held_through_a_probe() -> bool:  # held counts records, once each, however often re-held
        cc = conn_stats(stack.snapshot(), "cc-partner")
        reopened = cc.counters.get("breaker_opened", 0) >= 2
        return cc.breaker == "open" and reopened and cc.counters.get("held", 0) == len(addresses)

    wait_for(held_through_a_probe, timeout_s=60, message="cc-partner held after a failed probe")
    snap = stack.snapshot()
    cc = conn_stats(snap, "cc-partner")
    assert cc.breaker_reason == "auth_failed"
    assert cc.waiting_retries + cc.pending == len(addresses)
    assert snap.dead_letters_now == 0
    assert counter(snap, "cc-partner", "breaker_opened") >= 2  # opened, and again after a failed probe
    cc_side = sandbox.state("cc_partner")
    assert sum(cc_side["rejected"]["token"].values()) == cc_side["requests"]["token"] >= 2
    assert cc_side["unsubscribes"] == []
    assert counter(snap, "insider", "delivered") == len(addresses)  # the other connection delivers
    errors = [e for e in log_events(stack) if e.get("level") in ("error", "critical")]
    assert len(errors) == 1, errors  # one clear error, naming the connection
    assert errors[0]["connection"] == "cc-partner"
    assert "check this connection's credentials" in errors[0]["event"]
    assert "not-the-secret" not in stack.logs()

    data = yaml.safe_load(stack.config_path.read_text())
    set_connection("cc-partner", client_secret="sandbox-partner-secret")(data)
    stack.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    for proc in stack.processes.values():
        proc.stop()
        proc.start()
    snap = stack.wait_settled(expected_requests=len(ids), timeout_s=90)

    assert snap.dead_letters_now == 0
    assert counter(snap, "cc-partner", "delivered") == len(addresses)
    assert sorted(sandbox.state("cc_partner")["unsubscribed"]["a07e1lxqqqo0"]) == sorted(addresses)
    assert conn_stats(snap, "cc-partner").breaker == "closed"

"""The adapters against the real sandbox when things go wrong: expired tokens, many workers at once,
injected 5xx/429, refused credentials, and what reaches the logs."""

from __future__ import annotations

import io
import multiprocessing
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from tests.support.sandbox_fixtures import SandboxClient
from tests.worker.adapters.sandbox_support import (
    SANDBOX_SECRETS,
    adapter_for,
    connection_data,
    connection_from,
    deliver,
    emails_of,
    record,
)
from worker import keys
from worker.adapters import AdapterDeps, Outcome, OutcomeKind
from worker.adapters.auth import IssuedToken
from worker.adapters.common import PROVIDER_NAMES
from worker.adapters.refresh_tokens import read_stored
from worker.logs import configure_logging
from worker.providers import build_adapter

WORKERS = 8
RETRY = OutcomeKind.RETRY

# -- expired JWT: one re-authentication, however many workers meet it --------------------------------


def test_after_the_jwt_expires_the_next_delivery_reauthenticates_once_and_succeeds(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        first = deliver(adapter, [record("before@example.com")])
        assert sandbox.expire_tokens("cc_partner") == {"cc_partner": 1}
        second = deliver(adapter, [record("after@example.com")])

    assert [o.kind for o in first + second] == [OutcomeKind.DELIVERED] * 2
    state = sandbox.state("cc_partner")
    assert state["token_requests"] == 2
    assert state["rejected"] == {"unsubscribe": {"401": 1}}
    assert emails_of(state["unsubscribes"]) == ["before@example.com", "after@example.com"]


def _deliver_in_thread(sandbox: SandboxClient, deps: AdapterDeps, barrier: threading.Barrier, n: int) -> str:
    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        barrier.wait()
        return deliver(adapter, [record(f"thread{n}@example.com")])[0].kind.value


def test_many_threads_meeting_an_expired_jwt_cause_one_token_request(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        deliver(adapter, [record("warm@example.com")])  # a token in the shared cache
    sandbox.expire_tokens("cc_partner")
    sandbox.faults(cc_partner={"latency_ms": 100})  # the calls overlap for real
    barrier = threading.Barrier(WORKERS)

    with ThreadPoolExecutor(WORKERS) as pool:
        kinds = list(pool.map(lambda n: _deliver_in_thread(sandbox, deps, barrier, n), range(WORKERS)))

    assert kinds == ["delivered"] * WORKERS
    state = sandbox.state("cc_partner")
    assert state["token_requests"] == 2  # the first JWT, then exactly one replacement
    assert len(state["unsubscribes"]) == 1 + WORKERS


def _deliver_in_process(
    redis_url: str, conn: dict[str, Any], barrier: Any, results: Any, n: int
) -> None:  # pragma: no cover - runs in a child
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    adapter = build_adapter(connection_from(conn), AdapterDeps(redis=client))
    try:
        barrier.wait()
        results.put(deliver(adapter, [record(f"process{n}@example.com")])[0].kind.value)
    finally:
        adapter.close()


def test_many_worker_processes_meeting_an_expired_jwt_cause_one_token_request(
    sandbox: SandboxClient, deps: AdapterDeps, redis_url: str
) -> None:
    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        deliver(adapter, [record("warm@example.com")])
    sandbox.expire_tokens("cc_partner")
    sandbox.faults(cc_partner={"latency_ms": 100})
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(WORKERS), context.Queue()
    conn = connection_data(sandbox, "cc-partner")
    processes = [
        context.Process(target=_deliver_in_process, args=(redis_url, conn, barrier, results, n))
        for n in range(WORKERS)
    ]
    for process in processes:
        process.start()
    kinds = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)

    assert [p.exitcode for p in processes] == [0] * WORKERS
    assert kinds == ["delivered"] * WORKERS
    state = sandbox.state("cc_partner")
    assert state["token_requests"] == 2
    assert len(state["unsubscribes"]) == 1 + WORKERS


def test_an_expired_contacts_token_is_renewed_once_with_the_rotated_refresh_token(
    sandbox: SandboxClient, deps: AdapterDeps, redis_client: redis.Redis
) -> None:
    with adapter_for(sandbox, "cc-contacts", deps) as adapter:
        deliver(adapter, [record("john.byrd@example.com")])
        sandbox.expire_tokens("cc_contacts")
        outcomes = deliver(adapter, [record("debora.lang@example.com")])

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED]
    state = sandbox.state("cc_contacts")
    assert state["token_requests"] == 2  # the second one spent the refresh token the first returned
    assert state["rejected"] == {"find_contact": {"401": 1}}
    assert state["unsubscribed"] == [
        "debora.lang@example.com",
        "gone.already@example.com",
        "john.byrd@example.com",
    ]
    stored = read_stored(redis_client, "cc-contacts")
    assert stored is not None
    assert stored.token.startswith("sandbox-refresh-")


# -- injected 5xx / 429 become retries, Retry-After is the earliest retry time -----------------------

PROVIDERS: list[tuple[str, str, dict[str, Any]]] = [
    ("cc-partner", "cc_partner", {}),
    ("cc-contacts", "cc_contacts", {}),
    ("whatcounts", "whatcounts", {"target": "list:5"}),
    ("insider", "insider", {"target": "global"}),
    ("easytools", "easytools", {"contact_id": "550e8400-e29b-41d4-a716-446655440000"}),
]
EMAIL = {"cc_contacts": "john.byrd@example.com", "whatcounts": "jane@domain.com"}
#: Token calls stay healthy: the fault is on the provider's API calls.
API_OPERATIONS = ["unsubscribe", "find_contact", "get_contact", "put_contact"]


def one_record(provider: str, options: dict[str, Any]) -> Any:
    return record(EMAIL.get(provider, "someone@example.com"), **options)


@pytest.mark.parametrize(("name", "provider", "options"), PROVIDERS, ids=[p[1] for p in PROVIDERS])
@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_from_the_sandbox_is_a_retry_and_nothing_is_recorded(
    sandbox: SandboxClient, deps: AdapterDeps, name: str, provider: str, options: dict[str, Any], status: int
) -> None:
    sandbox.faults(**{provider: {"error_rate": 1, "error_status": status, "operations": API_OPERATIONS}})

    with adapter_for(sandbox, name, deps) as adapter:
        outcomes = deliver(adapter, [one_record(provider, options)])

    assert [(o.kind, o.reason, o.status) for o in outcomes] == [(RETRY, f"http_{status}", status)]
    state = sandbox.state(provider)
    assert state["unsubscribes"] == []
    assert sum(state["rejected"][op].get(str(status), 0) for op in state["rejected"]) == 1


@pytest.mark.parametrize(("name", "provider", "options"), PROVIDERS, ids=[p[1] for p in PROVIDERS])
def test_a_429_is_a_retry_no_earlier_than_its_retry_after(
    sandbox: SandboxClient, deps: AdapterDeps, name: str, provider: str, options: dict[str, Any]
) -> None:
    sandbox.faults(**{provider: {"error_rate": 1, "error_status": 429, "operations": API_OPERATIONS}})

    with adapter_for(sandbox, name, deps) as adapter:
        sent_at = time.time()
        outcomes = deliver(adapter, [one_record(provider, options)])

    assert [(o.kind, o.reason) for o in outcomes] == [(RETRY, "http_429")]
    assert outcomes[0].not_before is not None
    assert outcomes[0].not_before >= sent_at + 1  # the sandbox's Retry-After: 1
    assert sandbox.state(provider)["unsubscribes"] == []


@pytest.mark.parametrize(("name", "provider", "options"), PROVIDERS, ids=[p[1] for p in PROVIDERS])
def test_during_an_outage_the_retry_waits_for_its_announced_end(
    sandbox: SandboxClient, deps: AdapterDeps, name: str, provider: str, options: dict[str, Any]
) -> None:
    sandbox.faults(**{provider: {"outage_for_s": 120, "outage_status": 503, "operations": API_OPERATIONS}})

    with adapter_for(sandbox, name, deps) as adapter:
        sent_at = time.time()
        outcomes = deliver(adapter, [one_record(provider, options)])

    assert [(o.kind, o.reason) for o in outcomes] == [(RETRY, "http_503")]
    assert outcomes[0].not_before == pytest.approx(sent_at + 120, abs=3)


def test_a_token_endpoint_outage_is_a_retry_for_every_record_of_the_call(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    sandbox.faults(cc_partner={"error_rate": 1, "error_status": 503, "operations": ["token"]})

    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        outcomes = deliver(adapter, [record("a@example.com"), record("b@example.com")])

    assert [(o.kind, o.reason) for o in outcomes] == [(RETRY, "token_unavailable")] * 2
    assert "unsubscribe" not in sandbox.state("cc_partner")["requests"]


# -- refused credentials: reauth (auth_failed), as the status tables say -----------------------------

REFUSED: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("cc-partner", "cc_partner", {"api_key": "wrong-api-key"}, {}),
    ("insider", "insider", {"token": "wrong-insider-token"}, {"target": "global"}),
    ("easytools", "easytools", {"token": "wrong-easy-token"}, {"contact_id": "x"}),
    ("whatcounts", "whatcounts", {"password": "wrong-pass-123"}, {"target": "list:5"}),
]


@pytest.mark.parametrize(("name", "provider", "bad", "options"), REFUSED, ids=[r[1] for r in REFUSED])
def test_refused_credentials_are_reauth_auth_failed_and_unsubscribe_nobody(
    sandbox: SandboxClient,
    deps: AdapterDeps,
    name: str,
    provider: str,
    bad: dict[str, Any],
    options: dict[str, Any],
) -> None:
    with adapter_for(sandbox, name, deps, **bad) as adapter:
        outcomes = deliver(adapter, [record("someone@example.com", **options)])

    assert [(o.kind, o.reason) for o in outcomes] == [(OutcomeKind.REAUTH, "auth_failed")]
    assert sandbox.state(provider)["unsubscribes"] == []
    for secret in bad.values():
        assert secret not in f"{outcomes[0].message} {outcomes[0].excerpt}"
    # What an operator reads: the HTTP status, the provider by name, and the provider's own words.
    assert (outcomes[0].message or "").startswith(
        f"HTTP {outcomes[0].status} from {PROVIDER_NAMES[provider]}"
    )
    assert outcomes[0].excerpt


def test_a_refused_record_names_the_status_and_the_providers_words(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "cc-partner", deps) as adapter:
        [dead] = deliver(adapter, [record("bad-address")])

    assert (dead.kind, dead.status) == (OutcomeKind.DEAD, 400)
    assert (dead.message or "").startswith("HTTP 400 from Constant Contact unsubscribe: ")
    assert dead.excerpt


def test_a_wrong_api_key_gets_one_fresh_jwt_before_the_connection_is_stopped(
    sandbox: SandboxClient, deps: AdapterDeps
) -> None:
    with adapter_for(sandbox, "cc-partner", deps, api_key="wrong-api-key") as adapter:
        deliver(adapter, [record("someone@example.com")])

    state = sandbox.state("cc_partner")
    assert state["token_requests"] == 2
    assert state["rejected"] == {"unsubscribe": {"401": 2}}


# -- no secret and no clear address in any log line -------------------------------------------------

JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")


def run_everything(sandbox: SandboxClient, deps: AdapterDeps) -> tuple[list[Outcome], list[str]]:
    """Every operation, a refused batch, an expired JWT, refused credentials: outcomes and addresses."""
    runs: list[tuple[str, dict[str, Any], list[Any]]] = [
        (
            "cc-partner",
            {},
            [
                record("lang.carry@anymail.com"),
                record("bad-address"),
                record("g@example.com", "all_accounts"),
            ],
        ),
        ("cc-contacts", {}, [record("debora.lang@example.com"), record("nobody.here@example.com")]),
        ("whatcounts", {}, [record("jane@domain.com", "list:5"), record("jdoe@domain.com", "global")]),
        ("whatcounts-ck", {}, [record("kim@domain.com", "list:7", customer_key="11294")]),
        ("insider", {}, [record("i1@example.com", "global"), record("i2@example.com", "group:newsletter")]),
        ("easytools", {}, [record("john@example.com"), record("anna@example.com")]),
        ("whatcounts", {"password": "wrong-pass-123"}, [record("jane.doe@domain.com", "list:5")]),
        ("cc-partner", {"api_key": "wrong-api-key"}, [record("refused@example.com")]),
    ]
    outcomes: list[Outcome] = []
    for name, overrides, records in runs:
        with adapter_for(sandbox, name, deps, **overrides) as adapter:
            outcomes += deliver(adapter, records)
            if name == "cc-partner" and not overrides:
                sandbox.expire_tokens()
                outcomes += deliver(adapter, [record("after.expiry@example.com")])
    emails = [r.email for _, _, records in runs for r in records if "@" in r.email] + [
        "after.expiry@example.com"
    ]
    return outcomes, emails


def test_no_credential_jwt_or_clear_address_reaches_the_logs(
    sandbox: SandboxClient, deps: AdapterDeps, redis_client: redis.Redis, capfd: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", "json", stream)
    try:
        outcomes, emails = run_everything(sandbox, deps)
    finally:
        configure_logging("INFO", "json", io.StringIO())
    captured = capfd.readouterr()
    logs = stream.getvalue() + captured.out + captured.err
    cached = [IssuedToken.from_cache(redis_client.get(keys.token(n))) for n in ("cc-partner", "cc-contacts")]
    issued = [t.access_token for t in cached if t is not None]
    stored = read_stored(redis_client, "cc-contacts")
    issued.append(stored.token if stored is not None else "")
    assert len(issued) == 3
    assert all(issued)
    texts = [logs, *(f"{o.message} {o.excerpt}" for o in outcomes)]

    assert "renewed the shared access token" in logs  # the run did log
    assert {o.kind for o in outcomes} == set(OutcomeKind) - {OutcomeKind.RETRY}
    for text in texts:
        for secret in [*SANDBOX_SECRETS, "wrong-pass-123", "wrong-api-key", *issued]:
            assert secret not in text, f"{secret[:8]}… leaked"
        assert JWT.search(text) is None
        for email in emails:
            assert email not in text, f"{email} in clear"

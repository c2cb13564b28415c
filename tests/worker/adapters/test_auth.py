"""Shared access tokens: cached in Redis for every worker, renewed ahead of expiry, one renewal at a time."""

from __future__ import annotations

import itertools
import json
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from tests.worker.adapters.conftest import REFRESH_TOKEN, contacts_conn, partner_conn
from tests.worker.adapters.token_server import LocalTokenServer
from worker import keys
from worker.adapters.auth import IssuedToken, TokenManager
from worker.adapters.base import AdapterDeps
from worker.adapters.cc_contacts import contacts_fetch
from worker.adapters.cc_partner import partner_fetch
from worker.adapters.refresh_tokens import StoredRefreshToken, fingerprint, read_stored
from worker.adapters.token_endpoints import refresh_if_due, token_manager
from worker.errors import AuthenticationError
from worker.pipeline.ratelimit import RedisGate

CALLERS = 20
LIFETIME_S = 3600.0
MARGIN_S = 600.0


class Clock:
    """A settable clock for the token manager (Redis expiries still run on real time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class CountingFetch:
    """A token endpoint stand-in: numbered tokens issued at the clock's time."""

    def __init__(self, clock: Clock, lifetime_s: float = LIFETIME_S) -> None:
        self.clock = clock
        self.lifetime_s = lifetime_s
        self.calls = 0

    def __call__(self) -> IssuedToken:
        self.calls += 1
        now = self.clock()
        return IssuedToken(f"token-{self.calls}", now, now + self.lifetime_s)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def fetch(clock: Clock) -> CountingFetch:
    return CountingFetch(clock)


@pytest.fixture
def manager(redis_client: redis.Redis, fetch: CountingFetch, clock: Clock) -> Callable[[], TokenManager]:
    def make() -> TokenManager:
        return TokenManager(
            connection="ccp",
            client=redis_client,
            fetch=fetch,
            refresh_margin_s=MARGIN_S,
            lock_ttl_s=5,
            clock=clock,
            poll_s=0.01,
        )

    return make


def test_the_token_is_cached_in_redis_and_shared_by_every_worker(
    manager: Callable[[], TokenManager], fetch: CountingFetch, redis_client: redis.Redis
) -> None:
    first, second = manager(), manager()

    tokens = {first.token(), second.token(), first.token()}

    assert tokens == {"token-1"}
    assert fetch.calls == 1
    entry = json.loads(redis_client.get(keys.token("ccp")) or "{}")
    assert entry["access_token"] == "token-1"
    assert LIFETIME_S - 60 < redis_client.pttl(keys.token("ccp")) / 1000 <= LIFETIME_S


def test_a_token_is_renewed_ahead_of_its_expiry_not_at_it(
    manager: Callable[[], TokenManager], fetch: CountingFetch, clock: Clock
) -> None:
    tokens = manager()
    issued = clock.now
    tokens.token()

    clock.now = issued + LIFETIME_S - MARGIN_S - 1
    before_margin = tokens.token()
    clock.now = issued + LIFETIME_S - MARGIN_S + 1
    inside_margin = tokens.token()

    assert before_margin == "token-1"
    assert inside_margin == "token-2"
    assert fetch.calls == 2


def test_refresh_if_due_renews_a_missing_or_due_token_only(
    manager: Callable[[], TokenManager], fetch: CountingFetch, clock: Clock
) -> None:
    tokens = manager()

    missing = tokens.refresh_if_due()
    fresh = tokens.refresh_if_due()
    clock.now += LIFETIME_S - MARGIN_S + 1
    due = tokens.refresh_if_due()

    assert (missing, fresh, due) == (True, False, True)
    assert fetch.calls == 2
    assert tokens.token() == "token-2"


def test_a_401_replaces_exactly_the_token_that_failed(
    manager: Callable[[], TokenManager], fetch: CountingFetch
) -> None:
    tokens = manager()
    old = tokens.token()

    renewed = tokens.renew_after_rejection(old)
    late_report_of_the_old_token = tokens.renew_after_rejection(old)

    assert renewed == "token-2"
    assert late_report_of_the_old_token == "token-2"  # the newer token is not thrown away
    assert fetch.calls == 2


def test_a_failed_early_renewal_keeps_the_current_token_in_use(
    redis_client: redis.Redis, clock: Clock
) -> None:
    calls = {"n": 0}

    def fetch() -> IssuedToken:
        calls["n"] += 1
        if calls["n"] > 1:
            raise AuthenticationError("refused")
        return IssuedToken("token-1", clock(), clock() + LIFETIME_S)

    tokens = TokenManager(
        connection="ccp",
        client=redis_client,
        fetch=fetch,
        refresh_margin_s=MARGIN_S,
        lock_ttl_s=5,
        clock=clock,
    )
    tokens.token()
    clock.now += LIFETIME_S - MARGIN_S + 1

    assert tokens.token() == "token-1"
    assert calls["n"] == 2


# -- many workers at once, against a real token endpoint -----------------------------------------


@pytest.fixture
def token_server() -> Iterator[LocalTokenServer]:
    with LocalTokenServer(prefix="partner-jwt") as server:
        yield server


def partner_manager(redis_client: redis.Redis, server: LocalTokenServer, **deps: Any) -> TokenManager:
    conn = partner_conn(token_url=server.url)
    client = httpx.Client(timeout=5)
    return token_manager(conn, AdapterDeps(redis=redis_client, **deps), client, partner_fetch)


def expire_cached_token(redis_client: redis.Redis) -> None:
    """An old token that is about to run out: no caller may use it any more."""
    now = time.time()
    stale = IssuedToken("expired-jwt", now - LIFETIME_S + 5, now + 5)
    redis_client.set(keys.token("ccp"), stale.cache_text(), px=5000)


def run_together(callers: int, call: Callable[[], str]) -> list[str]:
    barrier = threading.Barrier(callers)

    def one() -> str:
        barrier.wait()
        return call()

    with ThreadPoolExecutor(callers) as pool:
        return list(pool.map(lambda _: one(), range(callers)))


def test_twenty_threads_meeting_an_expired_token_cause_one_token_request(
    redis_client: redis.Redis, token_server: LocalTokenServer
) -> None:
    expire_cached_token(redis_client)
    managers = [partner_manager(redis_client, token_server) for _ in range(CALLERS)]
    it = iter(managers)
    lock = threading.Lock()

    def call() -> str:
        with lock:
            mine = next(it)
        return mine.token()

    tokens = run_together(CALLERS, call)

    assert token_server.count == 1
    assert set(tokens) == {"partner-jwt-1"}


def test_twenty_threads_seeing_the_same_401_cause_one_token_request(
    redis_client: redis.Redis, token_server: LocalTokenServer
) -> None:
    tokens = partner_manager(redis_client, token_server)
    rejected = tokens.token()

    renewed = run_together(CALLERS, lambda: tokens.renew_after_rejection(rejected))

    assert token_server.count == 2  # the first token, then exactly one replacement
    assert set(renewed) == {"partner-jwt-2"}


def _process_caller(
    redis_url: str, token_url: str, barrier: Any, results: Any
) -> None:  # pragma: no cover - runs in a child
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    conn = partner_conn(token_url=token_url)
    tokens = token_manager(conn, AdapterDeps(redis=client), httpx.Client(timeout=5), partner_fetch)
    barrier.wait()
    results.put(tokens.token())


def test_twenty_worker_processes_meeting_an_expired_token_cause_one_token_request(
    redis_client: redis.Redis, redis_url: str, token_server: LocalTokenServer
) -> None:
    expire_cached_token(redis_client)
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(CALLERS), context.Queue()
    processes = [
        context.Process(target=_process_caller, args=(redis_url, token_server.url, barrier, results))
        for _ in range(CALLERS)
    ]
    for process in processes:
        process.start()
    tokens = [results.get(timeout=30) for _ in processes]
    for process in processes:
        process.join(timeout=10)

    assert [p.exitcode for p in processes] == [0] * CALLERS
    assert token_server.count == 1
    assert set(tokens) == {"partner-jwt-1"}


def test_the_token_endpoint_gets_at_most_one_request_a_second(
    redis_client: redis.Redis, token_server: LocalTokenServer
) -> None:
    token_server.delay_s = 0
    gate = RedisGate(redis_client, "ccp:token", "1/second")
    tokens = partner_manager(redis_client, token_server, token_gate=gate)

    current = tokens.token()
    for _ in range(2):
        current = tokens.renew_after_rejection(current)

    times = token_server.request_times
    assert len(times) == 3
    assert all(later - earlier >= 0.95 for earlier, later in itertools.pairwise(times))


def test_concurrent_renewals_spend_each_rotating_refresh_token_once_and_keep_the_newest(
    redis_client: redis.Redis,
) -> None:
    with LocalTokenServer(prefix="contacts-access", rotate=True) as server:
        conn = contacts_conn(token_url=server.url)

        def renew() -> str:
            deps = AdapterDeps(redis=redis_client)
            with httpx.Client(timeout=5) as client:
                return str(refresh_if_due(conn, deps, contacts_fetch, client=client))

        first_round = run_together(10, renew)
        redis_client.delete(keys.token("ccc"))  # the access token is gone: the next renewal must work
        second_round = run_together(10, renew)

    assert first_round.count("True") == 1
    assert second_round.count("True") == 1
    assert server.refresh_tokens_sent == [REFRESH_TOKEN, "rotated-refresh-1"]
    assert read_stored(redis_client, "ccc") == StoredRefreshToken(
        "rotated-refresh-2", fingerprint(REFRESH_TOKEN)
    )

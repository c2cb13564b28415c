"""One-record providers work a batch's records a few at a time: outcomes in order, limits kept.

Constant Contact contacts and easy.tools take one contact per call; their adapters overlap up to
``parallel_calls`` records of a batch on a small thread pool. These tests check that the calls do
overlap (and never more than allowed), that outcomes stay in record order, that the threads share
one access token (one token request per expiry, also after a 401), that every call passes the
shared rate limiter, and that a record whose work raises spoils only its own outcome.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import respx
import structlog

from tests.worker.adapters.conftest import (
    CC_BASE,
    CONTACTS_TOKEN_URL,
    EASY_BASE,
    TokenServer,
    contacts_conn,
    easytools_conn,
    make_record,
)
from worker.adapters.base import AdapterDeps, NullObserver, Outcome, OutcomeKind
from worker.adapters.cc_contacts import CcContactsAdapter
from worker.adapters.easytools import EasyToolsAdapter
from worker.adapters.parallel import MAX_ONE_RECORD_BATCH, RecordPool, one_record_batch_size
from worker.pipeline.observe import CallRecorder
from worker.pipeline.ratelimit import RedisGate
from worker.records import DeliveryRecord

SEARCH_URL = f"{CC_BASE}/contacts"
EASY_SEARCH_URL = f"{EASY_BASE}/contacts"
#: How long a test waits for calls that should be in flight together (a condition, not a timing).
MEET_TIMEOUT_S = 20.0


def contact_of(email: str, permission: str = "implicit") -> dict[str, Any]:
    return {
        "contact_id": f"id-{email.split('@')[0]}",
        "email_address": {"address": email, "permission_to_send": permission},
        "first_name": "Kept",
        "list_memberships": ["list-a"],
    }


class InFlight:
    """Counts requests being answered at once; the first ``meet`` of them wait for each other."""

    def __init__(self, meet: int = 0) -> None:
        self.now = 0
        self.peak = 0
        self.stamps: list[float] = []
        self._lock = threading.Lock()
        self._barrier = threading.Barrier(meet) if meet > 1 else None

    def __call__(self, answer: Callable[[httpx.Request], httpx.Response]) -> Any:
        def side_effect(request: httpx.Request) -> httpx.Response:
            with self._lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
                self.stamps.append(time.time())
            try:
                barrier = self._barrier
                if barrier is not None and not barrier.broken:
                    try:
                        # Only calls in flight together can all get past this.
                        barrier.wait(MEET_TIMEOUT_S)
                    except threading.BrokenBarrierError:
                        return httpx.Response(599, text="the calls did not overlap")
                    finally:
                        self._barrier = None
                return answer(request)
            finally:
                with self._lock:
                    self.now -= 1

        return side_effect


def cc_answer(request: httpx.Request) -> httpx.Response:
    """The search finds every address except those of ``missing.*``; the PUT echoes."""
    if request.method == "PUT":
        return httpx.Response(200, json={})
    email = request.url.params["email"]
    if email.startswith("missing"):
        return httpx.Response(200, json={"contacts": []})
    return httpx.Response(200, json={"contacts": [contact_of(email)]})


@pytest.fixture
def tokens(respx_mock: respx.MockRouter) -> TokenServer:
    server = TokenServer("contacts-access", lifetime_s=86400)
    respx_mock.post(CONTACTS_TOKEN_URL).mock(side_effect=server)
    return server


@pytest.fixture
def cc(deps: AdapterDeps) -> Iterator[CcContactsAdapter]:
    built = CcContactsAdapter(contacts_conn(parallel_calls=4), deps)
    yield built
    built.close()


def test_a_batch_is_three_times_parallel_calls_records_unless_batch_size_says_otherwise(
    deps: AdapterDeps,
) -> None:
    assert one_record_batch_size(4, None) == 12
    assert one_record_batch_size(1, None) == 3
    assert one_record_batch_size(4, 3) == 3
    assert one_record_batch_size(4, 5000) == MAX_ONE_RECORD_BATCH
    built = EasyToolsAdapter(easytools_conn(parallel_calls=6, rate_limit=None), deps)
    try:
        assert built.max_batch_size == 18
    finally:
        built.close()


def test_under_a_rate_limit_a_batch_is_what_the_drains_share_of_it_sends_in_about_a_second(
    deps: AdapterDeps,
) -> None:
    # Two calls a record; max_parallel drains share the limit; a day's limit does not pace a batch.
    assert one_record_batch_size(4, None, "20/second", max_parallel=4) == 2
    assert one_record_batch_size(4, None, "100/second", max_parallel=2) == 12
    assert one_record_batch_size(4, None, "10000/day", max_parallel=4) == 12
    assert one_record_batch_size(4, 6, "4/second", max_parallel=4) == 6  # batch_size is the operator's
    cc_default = CcContactsAdapter(contacts_conn(), deps)  # 4/second;10000/day, max_parallel 4
    easy_default = EasyToolsAdapter(easytools_conn(), deps)  # 100/minute
    try:
        assert (cc_default.max_batch_size, easy_default.max_batch_size) == (1, 1)
    finally:
        cc_default.close()
        easy_default.close()


def test_cc_contacts_overlaps_up_to_parallel_calls_records_and_keeps_outcomes_in_record_order(
    cc: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    flight = InFlight(meet=4)
    route = respx_mock.route(url__startswith=SEARCH_URL).mock(side_effect=flight(cc_answer))
    emails = [f"{'missing' if i % 3 == 1 else 'person'}.{i}@example.com" for i in range(10)]

    outcomes = cc.deliver([make_record(e) for e in emails])

    expected = [("dead" if e.startswith("missing") else "delivered") for e in emails]
    assert [o.kind.value for o in outcomes] == expected
    assert flight.peak == 4  # four calls in flight together, never more
    assert route.call_count == 10 + 7  # a search for each, a PUT for each found: one contact a call
    assert tokens.count == 1


def test_threads_without_a_token_make_one_token_request_between_them(
    cc: CcContactsAdapter, respx_mock: respx.MockRouter
) -> None:
    server = TokenServer("contacts-access", lifetime_s=86400)
    started = threading.Event()

    def slow_token(request: httpx.Request) -> httpx.Response:
        started.set()
        # Hold the renewal until every other thread has found no token and is waiting for it.
        threading.Event().wait(0.3)
        return server(request)

    respx_mock.post(CONTACTS_TOKEN_URL).mock(side_effect=slow_token)
    respx_mock.route(url__startswith=SEARCH_URL).mock(side_effect=cc_answer)

    outcomes = cc.deliver([make_record(f"p{i}@example.com") for i in range(8)])

    assert started.is_set()
    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 8
    assert server.count == 1
    api_calls = [c.request for c in respx_mock.calls if c.request.method != "POST"]
    assert {r.headers.get("authorization") for r in api_calls} == {"Bearer contacts-access-1"}


def test_a_401_seen_by_every_thread_at_once_renews_the_token_once(
    cc: CcContactsAdapter, tokens: TokenServer, respx_mock: respx.MockRouter
) -> None:
    flight = InFlight(meet=4)

    def expired_first(request: httpx.Request) -> httpx.Response:
        if request.headers["authorization"] == "Bearer contacts-access-1":
            return httpx.Response(401, json=[{"error_key": "unauthorized"}])
        return cc_answer(request)

    respx_mock.route(url__startswith=SEARCH_URL).mock(side_effect=flight(expired_first))
    cc.tokens.token()  # every thread starts with the same token, which the provider now refuses

    outcomes = cc.deliver([make_record(f"p{i}@example.com") for i in range(8)])

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 8
    assert tokens.count == 2  # the first token, and one renewal for all four threads' 401s


def test_every_call_of_every_thread_takes_its_turn_from_the_shared_rate_limit(
    redis_client: redis.Redis, respx_mock: respx.MockRouter, tokens: TokenServer
) -> None:
    recorder = CallRecorder()
    deps = AdapterDeps(
        redis=redis_client, gate=RedisGate(redis_client, "ccc", "4/second", max_wait_s=30), observer=recorder
    )
    flight = InFlight()
    respx_mock.route(url__startswith=SEARCH_URL).mock(side_effect=flight(cc_answer))
    adapter = CcContactsAdapter(contacts_conn(parallel_calls=4), deps)
    try:
        outcomes = adapter.deliver([make_record(f"p{i}@example.com") for i in range(6)])
    finally:
        adapter.close()

    assert [o.kind for o in outcomes] == [OutcomeKind.DELIVERED] * 6
    assert recorder.calls == len(flight.stamps) == 12  # every call observed, none lost between threads
    sent = sorted(flight.stamps)
    for i, first in enumerate(sent):
        in_window = [t for t in sent[i:] if t < first + 1.0]
        assert len(in_window) <= 4, f"{len(in_window)} calls within one second"


def test_easytools_overlaps_its_records_and_keeps_their_outcomes_in_order(
    deps: AdapterDeps, respx_mock: respx.MockRouter
) -> None:
    flight = InFlight(meet=3)

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"data": {"status": "unsubscribed"}})
        email = request.url.params["search"]
        if email.startswith("missing"):
            return httpx.Response(200, json={"data": []})
        return httpx.Response(200, json={"data": [{"uuid": f"u-{email.split('@')[0]}", "email": email}]})

    respx_mock.route(url__startswith=EASY_SEARCH_URL).mock(side_effect=flight(answer))
    adapter = EasyToolsAdapter(easytools_conn(parallel_calls=3), deps)
    emails = ["a@example.com", "missing.b@example.com", "c@example.com", "d@example.com", "missing.e@x.com"]
    try:
        outcomes = adapter.deliver([make_record(e) for e in emails])
    finally:
        adapter.close()

    assert [(o.kind.value, o.reason) for o in outcomes] == [
        ("delivered", None),
        ("dead", "contact_not_found"),
        ("delivered", None),
        ("delivered", None),
        ("dead", "contact_not_found"),
    ]
    assert flight.peak == 3
    unsubscribed = [c.request.url.path for c in respx_mock.calls if c.request.method == "POST"]
    assert sorted(unsubscribed) == [f"/api/v1/contacts/u-{n}/unsubscribe" for n in ("a", "c", "d")]
    assert isinstance(deps.observer, NullObserver)
    assert deps.observer.calls == 8  # five searches, three unsubscribes: counted through the lock


def test_a_record_whose_work_raises_is_retried_alone_and_the_others_keep_their_outcomes() -> None:
    pool = RecordPool(3, "test")
    records = [make_record(f"p{i}@example.com") for i in range(5)]

    def work(record: DeliveryRecord) -> Outcome:
        if record.email == "p2@example.com":
            raise ValueError("a bug")
        return Outcome.delivered(status=200)

    try:
        outcomes = pool.map(work, records)
    finally:
        pool.close()

    assert [(o.kind.value, o.reason) for o in outcomes] == [
        ("delivered", None),
        ("delivered", None),
        ("retry", "adapter_error"),
        ("delivered", None),
        ("delivered", None),
    ]
    assert "ValueError: a bug" in (outcomes[2].message or "")


def test_each_thread_logs_with_the_fields_bound_by_the_task() -> None:
    pool = RecordPool(2, "test")
    seen: list[Any] = []
    lock = threading.Lock()

    def work(record: DeliveryRecord) -> Outcome:
        with lock:
            seen.append(structlog.contextvars.get_contextvars().get("connection"))
        return Outcome.delivered()

    try:
        with structlog.contextvars.bound_contextvars(connection="cc-contacts"):
            pool.map(work, [make_record(f"p{i}@example.com") for i in range(4)])
    finally:
        pool.close()

    assert seen == ["cc-contacts"] * 4

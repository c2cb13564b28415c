"""How soon an open circuit lets delivery resume once the provider is back, on a simulated clock.

The breaker alone, on fakeredis: delivery tasks are simulated as one drain per flush interval that
asks the breaker for its mode and reports how its batch went.
"""

from __future__ import annotations

import math
from itertools import pairwise

import fakeredis
import pytest

from worker.pipeline.breaker import Breaker, Mode
from worker.settings import BreakerPolicy

#: The scheduler triggers a drain about this often (the flush interval).
TICK_S = 1.0
HOUR_S = 3600.0


def run_outage(breaker: Breaker, policy: BreakerPolicy, outage_s: float) -> tuple[list[float], float]:
    """Fail until ``outage_s``, then succeed. Returns the probe times and when delivery resumed."""
    now = 0.0
    for _ in range(policy.failure_threshold):
        breaker.on_failure("http_503", probe=False, now=now)
    probes = []
    while True:
        # Held records come back at the end of the cool-down; the next tick's drain asks again.
        now = max(now + TICK_S, math.ceil(breaker.open_until() / TICK_S) * TICK_S)
        if breaker.mode(now) is not Mode.PROBE:
            continue
        probes.append(now)
        if now >= outage_s:
            breaker.on_success()
            return probes, now
        breaker.on_failure("http_503", probe=True, now=now)


@pytest.mark.parametrize("outage_s", [240.0, 6 * HOUR_S])
def test_delivery_resumes_within_the_longest_cool_down_of_the_provider_coming_back(
    fake_redis: fakeredis.FakeRedis, outage_s: float
) -> None:
    policy = BreakerPolicy()
    breaker = Breaker(fake_redis, "insider", policy)

    probes, resumed_at = run_outage(breaker, policy, outage_s)

    assert policy.max_cooldown_s <= 30
    assert resumed_at - outage_s <= policy.max_cooldown_s + TICK_S
    gaps = [later - earlier for earlier, later in pairwise(probes)]
    assert max(gaps) <= policy.max_cooldown_s + TICK_S


def test_the_cool_down_doubles_from_its_first_value_and_stops_at_its_cap(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    policy = BreakerPolicy(failure_threshold=1, cooldown_s=5, max_cooldown_s=20)
    breaker = Breaker(fake_redis, "insider", policy)

    probes, _ = run_outage(breaker, policy, outage_s=120.0)

    gaps = [later - earlier for earlier, later in pairwise([0.0, *probes])]
    assert gaps[:5] == [5.0, 10.0, 20.0, 20.0, 20.0]


def test_a_first_cool_down_longer_than_the_cap_is_cut_to_the_cap(fake_redis: fakeredis.FakeRedis) -> None:
    policy = BreakerPolicy(failure_threshold=1, cooldown_s=300, max_cooldown_s=20)
    breaker = Breaker(fake_redis, "insider", policy)

    breaker.on_failure("http_503", probe=False, now=0.0)
    tripped_until = Breaker(fake_redis, "cc", policy).trip("auth_failed", now=0.0)

    assert breaker.open_until() == 20.0
    assert tripped_until == 20.0


def test_only_one_worker_probes_at_a_time_and_the_next_probe_follows_a_failed_one(
    fake_redis: fakeredis.FakeRedis,
) -> None:
    policy = BreakerPolicy(failure_threshold=1)
    workers = [Breaker(fake_redis, "insider", policy) for _ in range(4)]
    workers[0].on_failure("http_503", probe=False, now=0.0)

    during = {w.mode(now=1.0) for w in workers}
    after = [w.mode(now=policy.cooldown_s) for w in workers]
    workers[after.index(Mode.PROBE)].on_failure("http_503", probe=True, now=policy.cooldown_s)
    next_round = [w.mode(now=policy.cooldown_s + policy.max_cooldown_s) for w in workers]

    assert during == {Mode.HOLD}
    assert after.count(Mode.PROBE) == 1
    assert next_round.count(Mode.PROBE) == 1

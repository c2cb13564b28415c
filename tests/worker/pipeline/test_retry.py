"""The retry schedule: exponential backoff with full jitter, a Retry-After floor, a maximum age."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.pipeline.retry import backoff_ceiling_s, backoff_s, deadline_s, plan
from worker.records import DeliveryRecord
from worker.settings import RetryPolicy

POLICY = RetryPolicy(max_attempts=5, base_s=2, cap_s=60, max_age_s=3600)
NOW = 1_000_000.0


def record(attempts: int = 0, accepted_at: float = NOW) -> DeliveryRecord:
    return DeliveryRecord(
        request_id="r",
        connection="c",
        email="a@example.com",
        target="global",
        requested_at=datetime.now(UTC),
        accepted_at=accepted_at,
        attempts=attempts,
    )


@pytest.mark.parametrize(("failed", "ceiling"), [(1, 2), (2, 4), (3, 8), (5, 32), (6, 60), (500, 60)])
def test_the_ceiling_doubles_from_the_base_up_to_the_cap(failed: int, ceiling: float) -> None:
    assert backoff_ceiling_s(failed, POLICY) == ceiling


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_full_jitter_stays_between_zero_and_the_ceiling(failed: int, seed: int) -> None:
    wait = backoff_s(failed, POLICY, random.Random(seed))

    assert 0 <= wait <= backoff_ceiling_s(failed, POLICY)


def test_the_next_attempt_is_never_before_the_providers_retry_after() -> None:
    due = plan(record(), POLICY, now=NOW, not_before=NOW + 300, rng=random.Random(1)).due

    assert due == NOW + 300


def test_the_schedule_ends_after_max_attempts() -> None:
    result = plan(record(attempts=4), POLICY, now=NOW, not_before=None, rng=random.Random(1))

    assert result.due is None
    assert result.why_exhausted == "5 attempts failed"


def test_the_last_attempt_is_made_at_the_maximum_age_then_the_schedule_ends() -> None:
    old = record(attempts=1, accepted_at=NOW - 3590)

    last = plan(old, POLICY, now=NOW, not_before=NOW + 120, rng=random.Random(1))
    after = plan(old, POLICY, now=deadline_s(old, POLICY), not_before=None, rng=random.Random(1))

    assert last.due == deadline_s(old, POLICY)
    assert after.due is None
    assert after.why_exhausted is not None
    assert "maximum age" in after.why_exhausted


def test_waits_that_are_not_the_records_fault_spend_no_attempt() -> None:
    result = plan(
        record(attempts=4), POLICY, now=NOW, not_before=NOW + 5, rng=random.Random(1), counts_as_attempt=False
    )

    assert result.due == NOW + 5

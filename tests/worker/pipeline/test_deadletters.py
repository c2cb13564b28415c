"""The dead-letter store: retention, counts read without a SCAN, and no key per unknown connection name."""

from __future__ import annotations

import time

import pytest
import redis

from worker import keys
from worker.pipeline import counters, deadletters
from worker.pipeline.deadletters import DeadLetter, Filter, Reason

pytestmark = pytest.mark.integration

DAY_S = 86400.0
RETENTION_S = 90 * DAY_S


def letter(letter_id: str, *, age_s: float, now: float, **fields: object) -> DeadLetter:
    values: dict[str, object] = {
        "reason": "rejected_by_provider",
        "message": "FAILURE: 1 record(s) processed",
        "connection": "wc",
        "email": "jane.doe@example.com",
        "email_masked": "j***@example.com",
        **fields,
    }
    return DeadLetter(id=letter_id, dead_at=now - age_s, **values)  # type: ignore[arg-type]


def store(client: redis.Redis, *letters: DeadLetter) -> None:
    pipe = client.pipeline(transaction=True)
    for one in letters:
        deadletters.write(pipe, one)
    pipe.execute()


def test_letters_past_their_retention_go_with_their_indexes_and_younger_ones_stay(
    redis_client: redis.Redis,
) -> None:
    now = time.time()
    store(
        redis_client,
        letter("d-old", age_s=91 * DAY_S, now=now),
        letter("m-old", age_s=120 * DAY_S, now=now, reason="invalid_message", connection=None),
        letter("d-young", age_s=89 * DAY_S, now=now),
    )

    deleted = deadletters.purge_expired(redis_client, RETENTION_S, now=now)

    assert deleted == 2
    assert [d.id for d in deadletters.scan(redis_client, Filter())] == ["d-young"]
    assert deadletters.get(redis_client, "d-old") is None
    assert redis_client.zrange(keys.dlq_index_connection("wc"), 0, -1) == ["d-young"]
    assert redis_client.zcard(keys.dlq_index_reason("invalid_message")) == 0
    assert deadletters.counts_by_reason(redis_client) == {"rejected_by_provider": 1}
    # What happened stays counted: the cumulative counters are not history to forget.
    assert counters.read_dead_reasons(redis_client) == {"rejected_by_provider": 2, "invalid_message": 1}


def test_a_purge_deletes_at_most_its_limit_oldest_first(redis_client: redis.Redis) -> None:
    now = time.time()
    store(redis_client, *(letter(f"d-{i}", age_s=(100 + i) * DAY_S, now=now) for i in range(5)))

    first = deadletters.purge_expired(redis_client, RETENTION_S, now=now, limit=2)

    assert first == 2
    assert sorted(d.id for d in deadletters.scan(redis_client, Filter())) == ["d-0", "d-1", "d-2"]
    assert deadletters.purge_expired(redis_client, RETENTION_S, now=now, limit=2) == 2
    assert deadletters.purge_expired(redis_client, RETENTION_S, now=now, limit=2) == 1
    assert deadletters.purge_expired(redis_client, RETENTION_S, now=now, limit=2) == 0


def test_an_index_entry_whose_letter_is_gone_is_purged_too(redis_client: redis.Redis) -> None:
    now = time.time()
    store(redis_client, letter("d-old", age_s=100 * DAY_S, now=now))
    redis_client.hdel(keys.DLQ_ITEMS, "d-old")

    deleted = deadletters.purge_expired(redis_client, RETENTION_S, now=now)

    assert deleted == 1
    assert redis_client.zcard(keys.DLQ_INDEX) == 0


@pytest.mark.parametrize("named", ["nope-typo", None])
def test_a_letter_for_an_unknown_connection_creates_no_key_named_after_it(
    redis_client: redis.Redis, named: str | None
) -> None:
    unknown = letter(
        "d-unknown",
        age_s=0,
        now=time.time(),
        reason=Reason.UNKNOWN_CONNECTION.value,
        message="connection 'nope-typo' is not configured",
        connection=named,
    )

    store(redis_client, unknown)

    assert [k for k in redis_client.keys("*") if "nope-typo" in k] == []
    assert deadletters.counts_by_reason(redis_client) == {"unknown_connection": 1}
    assert deadletters.count(redis_client) == 1
    found = list(deadletters.scan(redis_client, Filter(connection=named, reason="unknown_connection")))
    assert [d.id for d in found] == ["d-unknown"]
    pipe = redis_client.pipeline(transaction=True)
    deadletters.remove(pipe, unknown)
    pipe.execute()
    assert deadletters.count(redis_client) == 0

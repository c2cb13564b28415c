"""The hot-path pipeline: same results and the same error behaviour as redis-py's, on a real Redis."""

from __future__ import annotations

import pytest
import redis

from worker.redis_batch import Batch


def test_a_transaction_runs_every_queued_command_and_returns_their_replies(redis_client: redis.Redis) -> None:
    batch = Batch(redis_client)
    batch.hset("h", mapping={"a": "1", "b": 2})
    batch.hset("h", "c", 3.5)
    batch.expire("h", 60)
    batch.xadd("s", {"d": "x"})
    batch.zadd("z", {"m": 1.25})
    batch.hincrby("h", "n", 4)
    batch.hincrbyfloat("h", "f", 0.5)
    batch.set("k", "v", ex=30)

    replies = batch.execute()

    assert len(replies) == 8
    assert redis_client.hgetall("h") == {"a": "1", "b": "2", "c": "3.5", "n": "4", "f": "0.5"}
    assert 0 < redis_client.ttl("h") <= 60
    assert redis_client.zscore("z", "m") == 1.25
    assert redis_client.xlen("s") == 1
    assert 0 < redis_client.ttl("k") <= 30


def test_reads_come_back_decoded_as_the_clients_replies_do(redis_client: redis.Redis) -> None:
    redis_client.hset("h", mapping={"a": "é", "b": "2"})
    batch = Batch(redis_client, transaction=False)
    batch.hexists("h", "a")
    batch.hmget("h", ["a", "missing", "b"])

    assert batch.execute() == [1, ["é", None, "2"]]


def test_a_command_the_server_refuses_to_queue_aborts_the_whole_transaction(
    redis_client: redis.Redis,
) -> None:
    batch = Batch(redis_client)
    batch.set("k", "v")
    batch.execute_command("HSET", "only-a-key")  # wrong number of arguments

    with pytest.raises(redis.ResponseError):
        batch.execute()

    assert redis_client.get("k") is None
    assert redis_client.ping()  # the connection pool is still usable


def test_a_command_failing_inside_exec_raises_after_the_others_ran(redis_client: redis.Redis) -> None:
    redis_client.set("text", "v")
    batch = Batch(redis_client)
    batch.set("k", "v")
    batch.hset("text", "f", "x")  # WRONGTYPE at EXEC time

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        batch.execute()

    assert redis_client.get("k") == "v"  # as redis-py: the other commands of the transaction ran


def test_an_empty_batch_sends_nothing(redis_client: redis.Redis) -> None:
    assert Batch(redis_client).execute() == []


def test_a_script_is_registered_once_per_client(redis_client: redis.Redis, redis_url: str) -> None:
    from worker import redis_scripts

    source = "return ARGV[1]"
    first = redis_scripts.script(redis_client, source)
    other = redis.Redis.from_url(redis_url, decode_responses=True)

    assert redis_scripts.script(redis_client, source) is first
    assert first(args=["x"]) == "x"
    assert redis_scripts.script(other, source) is not first
    other.close()

"""The broker transport survives kombu's close-after-disconnect race instead of killing the worker,
and its JSON decoder refuses what would crash the worker (deep nesting) as undecodable."""

from __future__ import annotations

import json

import pytest
import redis
from kombu import Connection, serialization
from kombu.exceptions import DecodeError
from kombu.transport import redis as kombu_redis

from worker.transport import MAX_MESSAGE_DEPTH, TRANSPORT, Channel, bounded_loads, register_bounded_json


def _channel_holding_an_unacked_message(redis_url: str, transport: str | type) -> tuple[Connection, object]:
    conn = Connection(redis_url, transport=transport)
    channel = conn.channel()
    queue = conn.SimpleQueue("unsub.test-transport", channel=channel)
    queue.put({"n": 1})
    queue.get(timeout=5)  # delivered, not acknowledged: the channel would restore it on close
    # What a lost broker connection leaves behind: pools disconnected, the connection's client gone.
    channel._disconnect_pools()
    channel.connection.client = None
    return conn, channel


@pytest.mark.integration
def test_closing_a_channel_whose_connection_is_gone_does_not_raise(
    redis_url: str, redis_client: redis.Redis
) -> None:
    _conn, channel = _channel_holding_an_unacked_message(redis_url, TRANSPORT)
    assert isinstance(channel, Channel)

    channel.close()  # kombu's own channel raises AttributeError here (next test)

    assert channel.closed
    assert redis_client.hlen("unacked") == 1  # kept: it comes back after the visibility timeout


@pytest.mark.integration
def test_kombus_own_channel_still_raises_there_so_the_workaround_is_still_needed(
    redis_url: str, redis_client: redis.Redis
) -> None:
    _conn, channel = _channel_holding_an_unacked_message(redis_url, kombu_redis.Transport)

    with pytest.raises(AttributeError, match="hostname"):
        channel.close()


# -- bounded_loads: the JSON decoder of every Celery message the worker reads ---------------------


def test_a_normal_task_body_is_decoded_as_json() -> None:
    body = json.dumps([["whatcounts"], {}, {"callbacks": None, "errbacks": None, "chain": None}])

    assert bounded_loads(body) == [["whatcounts"], {}, {"callbacks": None, "errbacks": None, "chain": None}]


def test_nesting_exactly_at_the_limit_is_accepted() -> None:
    body = "[" * MAX_MESSAGE_DEPTH + "1" + "]" * MAX_MESSAGE_DEPTH

    value = bounded_loads(body)

    for _ in range(MAX_MESSAGE_DEPTH):
        value = value[0]
    assert value == 1


@pytest.mark.parametrize("depth", [MAX_MESSAGE_DEPTH + 1, 5_000, 200_000])
def test_nesting_past_the_limit_is_refused_as_a_value_error_never_a_recursion_error(depth: int) -> None:
    body = '{"a":' * depth + "1" + "}" * depth

    with pytest.raises(ValueError, match=f"nested deeper than {MAX_MESSAGE_DEPTH} levels"):
        bounded_loads(body)


def test_a_huge_integer_within_pythons_digit_limit_is_decoded_exactly() -> None:
    digits = "9" * 4000

    assert bounded_loads(f"[{digits}]") == [int(digits)]


def test_an_integer_past_pythons_digit_limit_is_refused_as_undecodable() -> None:
    register_bounded_json()

    with pytest.raises(DecodeError, match="digits"):
        serialization.loads("[" + "9" * 50_000 + "]", "application/json", "utf-8")


def test_the_registered_json_decoder_refuses_deep_nesting_as_a_decode_error() -> None:
    register_bounded_json()
    body = "[" * 1_000 + "]" * 1_000

    with pytest.raises(DecodeError, match="nested deeper"):
        serialization.loads(body, "application/json", "utf-8")

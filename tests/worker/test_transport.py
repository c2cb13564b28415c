"""The broker transport survives kombu's close-after-disconnect race instead of killing the worker,
its JSON decoder refuses what would crash the worker (deep nesting) as undecodable, and its channel
dead-letters list items that are no kombu envelope at all instead of raising them out of kombu."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import re
from typing import Any

import fakeredis
import pytest
import redis
from kombu import Connection, Queue, serialization
from kombu.exceptions import DecodeError
from kombu.transport import redis as kombu_redis

from tests.support.waiting import wait_for
from tests.worker.logging_support import configured_logging, json_lines
from worker import transport
from worker.errors import NotAnEnvelopeError
from worker.pipeline import counters, deadletters
from worker.reasons import DeadReason
from worker.settings import get_settings
from worker.transport import (
    MAX_MESSAGE_DEPTH,
    TRANSPORT,
    Channel,
    EnvelopeMessage,
    SentinelChannel,
    bounded_loads,
    envelope_problem,
    nests_deeper,
    register_bounded_json,
)


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


# -- items that are no kombu envelope: dead-lettered raw, never raised out of the channel ---------

ITEMS_QUEUE = "unsub.test-items"
#: sha256 of kombu 5.7's ``Channel._brpop_read``, which :func:`worker.transport.read_item` follows.
KOMBU_BRPOP_READ_SHA256 = "c42518699709f2df90f55a048fe6346612ae5527e5c4a6819f2c0920dc62088f"


def envelope(**changes: Any) -> dict[str, Any]:
    """A kombu Redis envelope as kombu writes it (``changes`` replace top-level fields)."""
    return {
        "body": "e30=",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {},
        "properties": {
            "body_encoding": "base64",
            "delivery_tag": "tag-1",
            "delivery_info": {"exchange": "", "routing_key": ITEMS_QUEUE},
            "priority": 0,
        },
        **changes,
    }


def unreachable_redis() -> redis.Redis:
    server = fakeredis.FakeServer()
    server.connected = False  # every command raises ConnectionError
    return fakeredis.FakeRedis(server=server)


def drain(conn: Connection, count: int) -> list[Any]:
    """Consume ``ITEMS_QUEUE`` through the channel's BRPOP read until ``count`` messages arrived."""
    received: list[Any] = []

    def on_message(body: Any, message: Any) -> None:
        received.append(body)
        message.ack()

    with conn.Consumer(Queue(ITEMS_QUEUE), callbacks=[on_message]):
        wait_for(lambda: _drained(conn) and len(received) >= count, timeout_s=30, message="messages")
    return received


def _drained(conn: Connection) -> bool:
    with contextlib.suppress(TimeoutError):
        conn.drain_events(timeout=0.2)
    return True


def test_a_real_kombu_envelope_has_no_problem() -> None:
    assert envelope_problem(envelope()) is None


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([1, 2], "JSON list, not an object"),
        ("text", "JSON str, not an object"),
        ({}, "no 'properties' object"),
        (envelope(properties=[1]), "no 'properties' object"),
        ({k: v for k, v in envelope().items() if k != "body"}, "no 'body' string"),
        (envelope(properties={"delivery_info": {"exchange": "", "routing_key": "q"}}), "no delivery tag"),
        (envelope(properties={"delivery_tag": "t"}), "no delivery info"),
        (envelope(properties={"delivery_tag": "t", "delivery_info": {"exchange": ""}}), "no delivery info"),
        (envelope(headers=[1]), "'headers' is not an object"),
    ],
)
def test_what_keeps_a_payload_from_being_a_kombu_envelope_is_named(payload: Any, problem: str) -> None:
    assert envelope_problem(payload) == problem
    with pytest.raises(NotAnEnvelopeError, match=re.escape(problem)):
        EnvelopeMessage(payload, channel=None)


def deep(depth: int) -> Any:
    """``depth`` nested lists (built without recursion)."""
    value: Any = "core"
    for _ in range(depth):
        value = [value]
    return value


def test_a_real_kombu_envelope_is_far_from_the_depth_limit() -> None:
    assert not nests_deeper(envelope(), 4)


@pytest.mark.parametrize(
    ("payload", "part"),
    [
        (envelope(headers={"x-custom": deep(600)}), "'headers'"),
        (envelope(headers={"argsrepr": deep(MAX_MESSAGE_DEPTH)}), "'headers'"),
        (envelope(headers={"stamps": {"a": deep(900)}}), "'headers'"),
        ({**envelope(), "x": deep(900)}, "'x'"),
    ],
)
def test_an_envelope_nested_past_the_limit_anywhere_is_refused_naming_the_part(
    payload: Any, part: str
) -> None:
    problem = f"{part} nested deeper than {MAX_MESSAGE_DEPTH} levels"

    assert envelope_problem(payload) == problem
    with pytest.raises(NotAnEnvelopeError, match=re.escape(problem)):
        EnvelopeMessage(payload, channel=None)


def test_properties_and_delivery_info_nested_past_the_limit_are_refused() -> None:
    payload = envelope()
    payload["properties"]["x-prop"] = deep(900)
    other = envelope()
    other["properties"]["delivery_info"]["x"] = deep(MAX_MESSAGE_DEPTH - 2)

    assert envelope_problem(payload) == f"'properties' nested deeper than {MAX_MESSAGE_DEPTH} levels"
    assert envelope_problem(other) == f"'properties' nested deeper than {MAX_MESSAGE_DEPTH} levels"


def test_an_envelope_exactly_at_the_limit_is_accepted() -> None:
    payload = envelope(headers={"x-custom": deep(MAX_MESSAGE_DEPTH - 2)})  # envelope 1, headers 2

    assert envelope_problem(payload) is None


@pytest.mark.parametrize(("value", "deepest"), [(1, 0), ([], 1), ({"a": [1, {"b": []}]}, 4), (deep(5), 5)])
def test_nesting_is_measured_with_a_container_as_one_level(value: Any, deepest: int) -> None:
    assert not nests_deeper(value, deepest)
    assert deepest == 0 or nests_deeper(value, deepest - 1)


def test_the_depth_walk_takes_a_million_levels_without_recursion() -> None:
    assert nests_deeper(deep(1_000_000), MAX_MESSAGE_DEPTH)


def test_a_message_kombu_cannot_build_is_refused_as_no_envelope_instead_of_raising_its_own_error() -> None:
    payload = envelope()
    payload["properties"]["body_encoding"] = "rot13"  # kombu has no such codec: AttributeError

    with pytest.raises(NotAnEnvelopeError, match="AttributeError"):
        EnvelopeMessage(payload, channel=Connection("redis://", transport=TRANSPORT).default_channel)


@pytest.mark.integration
def test_items_that_are_no_envelope_become_dead_letters_and_the_next_message_is_still_delivered(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "letters_client", lambda: redis_client)
    items = [b"not json", b"\xff\xfe", b"[1,2]", b"{}", ("[" * 100_000 + "]" * 100_000).encode()]
    with Connection(redis_url, transport=TRANSPORT) as conn:
        for item in items:
            redis_client.lpush(ITEMS_QUEUE, item)
        conn.SimpleQueue(ITEMS_QUEUE).put({"n": 1})

        received = drain(conn, 1)

    assert received == [{"n": 1}]
    letters = list(deadletters.scan(redis_client, deadletters.Filter()))
    assert sorted(x.message.split(" (queue")[0] for x in letters) == sorted(
        f"message: not a kombu message envelope ({p}"
        for p in (
            "not JSON: JSONDecodeError: Expecting value: line 1 column 1 (char 0))",
            "not UTF-8)",
            "JSON list, not an object)",
            "no 'properties' object)",
            "JSON nested too deep to parse)",
        )
    )
    assert {x.reason for x in letters} == {DeadReason.INVALID_MESSAGE}
    assert counters.read_intake(redis_client)["refused_messages"] == len(items)
    assert redis_client.llen(ITEMS_QUEUE) == 0


@pytest.mark.integration
def test_deep_envelopes_and_items_over_the_size_limit_become_dead_letters_and_delivery_goes_on(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "letters_client", lambda: redis_client)
    limit = get_settings().max_message_bytes
    deep_header = json.dumps(envelope(headers={"x": "@"})).replace('"@"', "[" * 900 + "]" * 900)
    huge = json.dumps(envelope(headers={"x": "y" * limit}))
    with Connection(redis_url, transport=TRANSPORT) as conn:
        redis_client.lpush(ITEMS_QUEUE, deep_header, huge)
        conn.SimpleQueue(ITEMS_QUEUE).put({"n": 1})

        received = drain(conn, 1)

    assert received == [{"n": 1}]
    letters = {x.reason: x.message for x in deadletters.scan(redis_client, deadletters.Filter())}
    assert letters == {
        DeadReason.INVALID_MESSAGE: (
            f"message: not a kombu message envelope ('headers' nested deeper than {MAX_MESSAGE_DEPTH} levels)"
            f" (queue {ITEMS_QUEUE!r})"
        ),
        DeadReason.MESSAGE_TOO_LARGE: (
            f"message: too large ({len(huge)} bytes, over max_message_bytes {limit}) (queue {ITEMS_QUEUE!r})"
        ),
    }
    assert counters.read_intake(redis_client)["refused_messages"] == 2


@pytest.mark.integration
def test_an_item_whose_letter_cannot_be_written_goes_back_to_the_end_of_its_list_with_one_log_line(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "letters_client", unreachable_redis)
    pauses: list[bool] = []
    monkeypatch.setattr(transport, "pause_after_failed_letter", lambda: pauses.append(True))
    with Connection(redis_url, transport=TRANSPORT) as conn, configured_logging() as stream:
        redis_client.lpush(ITEMS_QUEUE, b"jane.doe@example.com is not json")
        conn.SimpleQueue(ITEMS_QUEUE).put({"n": 1})

        received = drain(conn, 1)

    assert received == [{"n": 1}]
    assert redis_client.lrange(ITEMS_QUEUE, 0, -1) == ["jane.doe@example.com is not json"]
    lines = [x for x in json_lines(stream) if x.get("logger") == "worker.transport"]
    assert [x["event"] for x in lines] == [
        "could not dead-letter an item that is no kombu message envelope; pushed back to the end of its list"
    ]
    assert "jane.doe" not in stream.getvalue()
    assert pauses == [True]


def test_both_channels_read_and_build_messages_through_the_guard() -> None:
    for channel in (Channel, SentinelChannel):
        assert channel.Message is EnvelopeMessage
        assert channel._brpop_read is not kombu_redis.Channel._brpop_read


def test_kombus_brpop_read_is_still_the_one_read_item_follows() -> None:
    source = inspect.getsource(kombu_redis.Channel._brpop_read)

    assert hashlib.sha256(source.encode()).hexdigest() == KOMBU_BRPOP_READ_SHA256, (
        "kombu changed Channel._brpop_read: bring worker.transport.read_item in line, then pin the new hash"
    )


@pytest.mark.integration
@pytest.mark.parametrize("settle", ["ack", "reject"])
def test_a_task_that_ends_after_its_channel_lost_the_broker_settles_quietly_and_its_message_comes_back(
    redis_url: str, redis_client: redis.Redis, settle: str
) -> None:
    conn = Connection(redis_url, transport=TRANSPORT)
    channel = conn.channel()
    queue = conn.SimpleQueue("unsub.test-transport", channel=channel)
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    channel._disconnect_pools()  # the broker connection drops while the task runs
    channel.connection.client = None

    message.ack() if settle == "ack" else message.reject()  # kombu's own channel: AttributeError

    assert redis_client.hlen("unacked") == 1  # still unacknowledged: restored after the visibility timeout


@pytest.mark.integration
def test_kombus_own_channel_raises_at_that_ack_so_the_workaround_is_still_needed(
    redis_url: str,
) -> None:
    conn = Connection(redis_url, transport=kombu_redis.Transport)
    channel = conn.channel()
    queue = conn.SimpleQueue("unsub.test-transport", channel=channel)
    queue.put({"n": 1})
    message = queue.get(timeout=5)
    channel._disconnect_pools()
    channel.connection.client = None

    with pytest.raises(AttributeError, match="hostname"):
        message.ack()

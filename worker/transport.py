"""The Redis broker transport, with one kombu race made harmless.

When the broker connection drops, Celery closes the old connection before reconnecting. kombu's
Redis channel disconnects its pool first and then, while closing, tries to give this worker's
unacknowledged messages back, which needs a new pool for a connection that is already gone:
``AttributeError: 'NoneType' object has no attribute 'hostname'`` escapes Celery's error handling
and the worker exits with "Unrecoverable error" instead of reconnecting (kombu issue #582, seen in
the Redis-restart reliability test). Nothing is lost either way (the messages stay in kombu's
unacked hash and come back after the visibility timeout), so this channel lets that close finish
quietly and Celery reconnects. The same race hits a task that ends after its channel lost the
broker (its ack or reject needs the same new pool): also let pass, the message comes back later.

Items that are not kombu message envelopes. kombu's channel pops an item off a list and parses it
(``_brpop_read``); an item that is not JSON (not UTF-8, nested past Python's recursion limit) or
JSON that is no envelope (not an object, no ``body`` or ``properties``, no delivery tag or delivery
info) raised out of kombu before Celery saw a message: the item was gone and the worker stopped
("Unrecoverable error"). This channel reads the list as kombu does, parses with kombu's own
decoder once, and builds kombu's message with :class:`EnvelopeMessage`, which names what is wrong.
An item it cannot use becomes a dead letter (``invalid_message``, "not a kombu message envelope
(...)"), its text kept raw, cut and masked when shown, written and counted as a refused message by
the side door's writer (:func:`worker.side_queues.keep`); the channel reads on.

Envelopes that would kill the worker further on are refused the same way. Celery pickles a
message's headers and properties for its pool process; nested a few hundred levels deep (a custom
header, ``argsrepr``, ``stamps``, a property) that raised RecursionError in the consumer, the worker
exited and the message, restored, killed every restart. So an envelope any part of which nests
deeper than :data:`MAX_MESSAGE_DEPTH` is refused (one pass over the parsed envelope, no recursion,
a few microseconds for a real one), and an item larger than ``max_message_bytes`` (what the intake
door takes at most; our task messages are under 2 KB) is refused as ``message_too_large`` before
it is parsed, so a huge header cannot multiply in memory through Celery and the pool.

Crash and failure semantics: a popped item is off its list (kombu's own window: a crash between its
pop and its unacked bookkeeping loses a valid message too). If the letter cannot be written, one
redacted line is logged and the item is pushed back onto the far end of the list it came from, so
it waits behind everything queued and holds nothing up; the consumer then pauses
:data:`LETTER_RETRY_PAUSE_S`, so an outage of the state store brings it round about once per pause,
not in a tight loop of failed writes and log lines. Only if the push-back fails as well (the broker
gone too) is it lost, and the line says so, with its size and digest, not its content.

The Sentinel transport (``sentinel://`` broker URLs, :data:`SENTINEL_TRANSPORT`) closes and reads its
channels the same way: it is kombu's Sentinel channel, which asks the Sentinels for the primary on
every (re)connection, with these fixes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from functools import partial
from queue import Empty
from typing import Any, Final

import redis
from kombu import serialization
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils import json as kombu_json
from kombu.utils.encoding import bytes_to_str

from producer.connect import is_sentinel_url
from worker import side_queues
from worker.errors import NotAnEnvelopeError
from worker.logs import get_logger
from worker.reasons import DeadReason
from worker.redis_client import redis_for
from worker.settings import get_settings

log = get_logger(__name__)

#: ``broker_transport`` value that selects this transport.
TRANSPORT: str = f"{__name__}:Transport"
#: ``broker_transport`` value for a ``sentinel://`` broker URL.
SENTINEL_TRANSPORT: str = f"{__name__}:SentinelTransport"
#: Deepest JSON a Celery message (ours are a few levels) may nest. Deeper ones are refused as
#: undecodable (Celery logs and drops them) instead of crashing the worker's main process, which
#: would fail to pickle them for its pool (RecursionError) and exit.
MAX_MESSAGE_DEPTH: Final = 64
#: Seconds the consumer pauses after a raw item's dead letter could not be written (it was pushed
#: back), so a state store that is down is retried about this often, not in a tight loop.
LETTER_RETRY_PAUSE_S: Final = 1.0
#: What JSON nests: a tuple, not ``dict | list``, as ``isinstance`` takes it faster (hot path).
_CONTAINERS: Final = (dict, list)


def bounded_loads(data: Any) -> Any:
    """kombu's JSON decoding, refusing nesting deeper than :data:`MAX_MESSAGE_DEPTH`."""
    try:
        value = kombu_json.loads(data)  # type: ignore[no-untyped-call]
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {MAX_MESSAGE_DEPTH} levels") from None
    if nests_deeper(value, MAX_MESSAGE_DEPTH):
        raise ValueError(f"JSON nested deeper than {MAX_MESSAGE_DEPTH} levels")
    return value


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether parsed JSON ``value`` nests objects and arrays more than ``limit`` levels deep (a
    container alone is one level). Level by level, no recursion; it stops at the first level past
    ``limit``, so it costs at most one look at each value (a scalar: one ``isinstance``)."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    for _ in range(limit):
        if not level:
            return False
        level = [
            c for x in level for c in (x.values() if isinstance(x, dict) else x) if isinstance(c, _CONTAINERS)
        ]
    return bool(level)


def register_bounded_json() -> None:
    """Make the ``json`` serializer of this process decode with :func:`bounded_loads`."""
    serialization.register(  # type: ignore[no-untyped-call]
        "json", kombu_json.dumps, bounded_loads, content_type="application/json", content_encoding="utf-8"
    )


def transport_for(broker_url: str) -> str:
    """The ``broker_transport`` for ``broker_url``: Sentinel's for ``sentinel://``, else plain Redis."""
    return SENTINEL_TRANSPORT if is_sentinel_url(broker_url) else TRANSPORT


def _quietly(channel: kombu_redis.Channel, call: Callable[[], object], what: str) -> None:
    """Run ``call`` (a close, an ack, a reject), letting only the race above pass: it needs a new pool
    for a broker connection that is gone. Unacknowledged messages stay in the unacked hash and come
    back after the visibility timeout (a delivery task run twice is harmless: drains are idempotent)."""
    try:
        call()
    except AttributeError:
        if getattr(channel.connection, "client", None) is not None:
            raise  # not the race: a real bug must show
        log.warning(f"broker connection already gone at {what}; unacknowledged messages come back later")


# -- items that are not kombu envelopes -----------------------------------------------------------


def envelope_problem(payload: Any) -> str | None:
    """What keeps ``payload`` (an item's parsed JSON) from being a kombu envelope, or None."""
    if not isinstance(payload, dict):
        return f"JSON {type(payload).__name__}, not an object"
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        return "no 'properties' object"
    if not isinstance(payload.get("body"), str):
        return "no 'body' string"
    if not isinstance(properties.get("delivery_tag"), str):
        return "no delivery tag"
    info = properties.get("delivery_info")
    if not (isinstance(info, dict) and isinstance(info.get("exchange"), str)):
        return "no delivery info"
    if not isinstance(info.get("routing_key"), str):
        return "no delivery info"
    headers = payload.get("headers")
    if not (headers is None or isinstance(headers, dict)):
        return "'headers' is not an object"
    return _too_deep_part(payload)


def _too_deep_part(payload: dict[str, Any]) -> str | None:
    """The part of an envelope nested deeper than :data:`MAX_MESSAGE_DEPTH` (its headers, its
    properties...), or None. Celery pickles headers and properties for its pool: past Python's
    recursion limit that raised out of the consumer and the worker died, the message restored."""
    if not nests_deeper(payload, MAX_MESSAGE_DEPTH):  # one walk (about 2 µs); the part only if deep
        return None
    for name, part in payload.items():
        if nests_deeper(part, MAX_MESSAGE_DEPTH - 1):
            return f"{side_queues.cut(name)!r} nested deeper than {MAX_MESSAGE_DEPTH} levels"
    return None


class EnvelopeMessage(virtual.Message):
    """kombu's message of a Redis channel, raising :class:`NotAnEnvelopeError` for a payload that is
    no kombu envelope (kombu's own raised a KeyError or a TypeError out of the channel)."""

    def __init__(self, payload: Any, channel: Any = None, **kwargs: Any) -> None:
        problem = envelope_problem(payload)
        if problem is not None:
            raise NotAnEnvelopeError(problem)
        try:
            super().__init__(payload, channel=channel, **kwargs)  # type: ignore[no-untyped-call]
        except Exception as exc:  # a body that is not the base64 it claims to be, an unknown encoding
            raise NotAnEnvelopeError(_error_text(exc)) from None


def read_item(channel: Any, **options: Any) -> bool:
    """kombu 5.7's ``Channel._brpop_read`` (read the BRPOP reply, rotate the fair cycle, deliver),
    with the item delivered by :func:`deliver_item`, which keeps what it cannot read instead of
    raising. Otherwise kombu's lines; ``tests/worker/test_transport.py`` pins the source they follow."""
    try:
        try:
            reply = channel.client.parse_response(channel.client.connection, "BRPOP", **options)
        except channel.connection_errors:
            channel.client.connection.disconnect()  # the next iteration reconnects
            raise
        if not reply:
            raise Empty()
        key, item = reply
        queue = bytes_to_str(key).rsplit(channel.sep, 1)[0]  # type: ignore[no-untyped-call]
        channel._queue_cycle.rotate(queue)
        deliver_item(channel, key, item, queue)
        return True
    finally:
        channel._in_poll = None
        channel._flush_brpop_reauth()


def deliver_item(channel: Any, key: bytes, item: bytes, queue: str) -> None:
    """Parse ``item`` (popped off ``key``) once, as kombu does, and deliver it to Celery; an item
    that is no kombu envelope, or larger than the intake door takes, is refused (:func:`refuse_item`)."""
    limit = get_settings().max_message_bytes
    if len(item) > limit:
        problem = f"too large ({len(item)} bytes, over max_message_bytes {limit})"
        refuse_item(channel, key, item, queue, problem, reason=DeadReason.MESSAGE_TOO_LARGE)
        return
    try:
        payload = kombu_json.loads(bytes_to_str(item))  # type: ignore[no-untyped-call]
    except Exception as exc:  # pure data: whatever the decoder raises means "not JSON"
        problem = _parse_problem(item, exc)
    else:
        try:
            channel.connection._deliver(payload, queue)
            return
        except NotAnEnvelopeError as exc:  # raised only by EnvelopeMessage, before Celery sees it
            problem = str(exc)
    refuse_item(channel, key, item, queue, f"not a kombu message envelope ({problem})")


def refuse_item(
    channel: Any,
    key: bytes,
    item: bytes,
    queue: str,
    problem: str,
    *,
    reason: DeadReason = DeadReason.INVALID_MESSAGE,
) -> None:
    """Dead-letter ``item`` raw (``problem`` says what it is); if that fails, push it back onto
    ``key`` (see the module docstring)."""
    refusal = side_queues.Refusal(
        queue=side_queues.cut(queue),
        task_name=None,
        task_id=None,
        envelope=_text(item),
        reason=reason,
        problem=f"message: {problem} (queue {side_queues.cut(queue)!r})",
    )
    try:
        side_queues.keep(letters_client(), refusal)
    except Exception as exc:  # Redis away, or a bug: the item must not be lost, the consumer must live
        _push_back(channel, key, item, refusal, exc)
        return
    log.warning("broker list item Celery cannot take dead-lettered", queue=refusal.queue, problem=problem)


def letters_client() -> redis.Redis:
    """Where the dead letters go: the state store."""
    return redis_for(get_settings().state_redis_url)


def pause_after_failed_letter() -> None:
    time.sleep(LETTER_RETRY_PAUSE_S)


def _push_back(channel: Any, key: bytes, item: bytes, refusal: side_queues.Refusal, exc: Exception) -> None:
    facts = {"queue": refusal.queue, "size": len(item), "sha256": hashlib.sha256(item).hexdigest()[:32]}
    try:
        with channel.conn_or_acquire() as client:
            client.lpush(_unprefixed(channel, key), item)
    except Exception as push_exc:
        log.error(
            "could not dead-letter an item that is no kombu message envelope, nor push it back: lost",
            **facts,
            error=_error_text(exc),
            push_error=_error_text(push_exc),
        )
        return
    log.error(
        "could not dead-letter an item that is no kombu message envelope; pushed back to the end of its list",
        **facts,
        error=_error_text(exc),
    )
    pause_after_failed_letter()


def _unprefixed(channel: Any, key: bytes) -> bytes:
    """``key`` as the channel's client names it (it adds kombu's ``global_keyprefix`` itself)."""
    prefix = (getattr(channel, "global_keyprefix", "") or "").encode()
    return key[len(prefix) :] if prefix and key.startswith(prefix) else key


def _parse_problem(item: bytes, exc: Exception) -> str:
    if isinstance(exc, RecursionError):
        return "JSON nested too deep to parse"
    try:
        item.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    return f"not JSON: {_error_text(exc)}"


def _error_text(exc: BaseException) -> str:
    return side_queues.cut(f"{type(exc).__name__}: {exc}")


def _text(item: bytes | str) -> str:
    return item if isinstance(item, str) else item.decode("utf-8", "backslashreplace")


# -- the channels ----------------------------------------------------------------------------------


class _GuardedChannel(kombu_redis.Channel):
    """What both channels add: envelopes checked as read, and the close/settle race let pass."""

    Message = EnvelopeMessage

    def _brpop_read(self, **options: Any) -> bool:
        return read_item(self, **options)

    def close(self) -> None:
        _quietly(self, super().close, "closing a channel")

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        _quietly(self, partial(super().basic_ack, delivery_tag, multiple), "an acknowledgement")

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        _quietly(self, partial(super().basic_reject, delivery_tag, requeue), "a rejection")


class Channel(_GuardedChannel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_GuardedChannel, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel

"""The dead-letter store: records that cannot be delivered, with a true reason, for an operator.

One hash of JSON records (``keys.DLQ_ITEMS``) and sorted-set indexes by time: all, per connection,
per reason. Writes are queued on the caller's transaction, so a dead letter exists exactly when the
record left the buffer. Ids are derived from what failed (the delivery, or the intake message), so a
redelivered message overwrites its own dead letter rather than adding a second one.

Only configured connections get a per-connection index and counters: a letter for a connection name
nobody configured (reason ``unknown_connection``) is indexed by time and reason only, so input can
never create keys. Reading costs a fixed number of commands whatever the keyspace holds: the reasons
ever used are the fields of the cumulative ``keys.DLQ_REASON_TOTALS`` hash (written in the same
transaction as each letter), and each reason's index is counted with ZCARD. Letters older than
``dlq_retention_s`` are deleted by :func:`purge_expired` (the scheduler calls it every tick).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from worker import keys
from worker.logs import get_logger, mask_email
from worker.pipeline import counters
from worker.reasons import DeadReason
from worker.records import DeliveryRecord
from worker.redis_client import text, text_list

log = get_logger(__name__)

#: Longest invalid message kept (as received) for an operator to inspect.
RAW_MESSAGE_CHARS: Final = 8192
#: Dead letters read from Redis per round trip.
SCAN_PAGE: Final = 500
#: Most dead letters one :func:`purge_expired` call deletes (the scheduler calls it every tick).
PURGE_PAGE: Final = 500


#: The dead-letter reasons (kept under this name for the pipeline's modules).
Reason = DeadReason


class DeadLetter(BaseModel):
    """One record that could not be delivered, and everything an operator needs about it."""

    model_config = ConfigDict(frozen=True)

    id: str
    reason: str
    message: str
    dead_at: float
    connection: str | None = None
    provider: str | None = None
    request_id: str | None = None
    target: str | None = None
    email_masked: str | None = None
    #: Full address: kept only because replay needs it; shown only on request.
    email: str | None = None
    status: int | None = None
    excerpt: str | None = None
    attempts: int = 0
    first_attempt_at: float | None = None
    last_attempt_at: float | None = None
    #: The delivery record, for replay (deliveries that reached the buffer).
    record: dict[str, Any] | None = None
    #: The validated request, for replay (deliveries that failed at intake: unknown connection...).
    request: dict[str, Any] | None = None
    #: The message as received, cut (intake failures: invalid messages).
    raw: str | None = None
    problems: list[str] = Field(default_factory=list)


def delivery_letter_id(delivery_id: str) -> str:
    return "d-" + hashlib.sha256(delivery_id.encode()).hexdigest()[:16]


def message_letter_id(origin: str) -> str:
    return "m-" + hashlib.sha256(origin.encode()).hexdigest()[:16]


def for_record(
    record: DeliveryRecord,
    *,
    reason: str,
    message: str,
    provider: str | None,
    status: int | None = None,
    excerpt: str | None = None,
    attempts: int | None = None,
    now: float | None = None,
) -> DeadLetter:
    """A dead letter for a delivery record that cannot be delivered."""
    now = time.time() if now is None else now
    tried = record.attempts if attempts is None else attempts
    return DeadLetter(
        id=delivery_letter_id(record.delivery_id),
        reason=reason,
        message=message,
        dead_at=now,
        connection=record.connection,
        provider=provider,
        request_id=record.request_id,
        target=record.target,
        email_masked=mask_email(record.email),
        email=record.email,
        status=status,
        excerpt=excerpt,
        attempts=tried,
        first_attempt_at=record.first_attempt_at or (now if tried else None),
        last_attempt_at=now if tried else None,
        record=record.model_dump(mode="json"),
    )


def indexed_connection(letter: DeadLetter) -> str | None:
    """The connection a letter is indexed and counted under: none for a name nobody configured."""
    return None if letter.reason == Reason.UNKNOWN_CONNECTION else letter.connection


def write(pipe: Any, letter: DeadLetter) -> None:
    """Queue the dead letter, its indexes and its counters on the caller's transaction."""
    connection = indexed_connection(letter)
    pipe.hset(keys.DLQ_ITEMS, letter.id, letter.model_dump_json(exclude_none=True))
    pipe.zadd(keys.DLQ_INDEX, {letter.id: letter.dead_at})
    pipe.zadd(keys.dlq_index_reason(letter.reason), {letter.id: letter.dead_at})
    if connection:
        pipe.zadd(keys.dlq_index_connection(connection), {letter.id: letter.dead_at})
    counters.incr_dead_reason(pipe, connection, letter.reason)


def remove(pipe: Any, letter: DeadLetter) -> None:
    """Queue removal of a dead letter and its index entries."""
    connection = indexed_connection(letter)
    pipe.hdel(keys.DLQ_ITEMS, letter.id)
    pipe.zrem(keys.DLQ_INDEX, letter.id)
    pipe.zrem(keys.dlq_index_reason(letter.reason), letter.id)
    if connection:
        pipe.zrem(keys.dlq_index_connection(connection), letter.id)


def get(client: redis.Redis, letter_id: str) -> DeadLetter | None:
    raw = client.hget(keys.DLQ_ITEMS, letter_id)
    return DeadLetter.model_validate_json(text(raw)) if raw else None


@dataclass(frozen=True)
class Filter:
    """Which dead letters an operator means."""

    connection: str | None = None
    reason: str | None = None
    since: float | None = None
    before: float | None = None

    def index_key(self) -> str:
        if self.connection and self.reason != Reason.UNKNOWN_CONNECTION:
            return keys.dlq_index_connection(self.connection)
        if self.reason:
            return keys.dlq_index_reason(self.reason)
        return keys.DLQ_INDEX

    def matches(self, letter: DeadLetter) -> bool:
        return (self.connection is None or letter.connection == self.connection) and (
            self.reason is None or letter.reason == self.reason
        )


def scan(client: redis.Redis, which: Filter, *, limit: int | None = None) -> Iterator[DeadLetter]:
    """Dead letters matching ``which``, oldest first, read a page at a time."""
    low: float | str = which.since if which.since is not None else "-inf"
    high: float | str = f"({which.before}" if which.before is not None else "+inf"
    offset = 0
    yielded = 0
    while limit is None or yielded < limit:
        ids = text_list(client.zrangebyscore(which.index_key(), low, high, start=offset, num=SCAN_PAGE))
        if not ids:
            return
        offset += len(ids)
        for raw in client.hmget(keys.DLQ_ITEMS, ids):
            if raw is None:
                continue
            letter = DeadLetter.model_validate_json(text(raw))
            if which.matches(letter):
                yield letter
                yielded += 1
                if limit is not None and yielded >= limit:
                    return


def count(client: redis.Redis, which: Filter | None = None) -> int:
    """How many dead letters there are now (matching ``which``)."""
    which = which or Filter()
    if (which.connection and which.reason) or which.since is not None or which.before is not None:
        return sum(1 for _ in scan(client, which))
    return int(client.zcard(which.index_key()))


def counts_by_reason(client: redis.Redis, reasons: Iterable[str] | None = None) -> dict[str, int]:
    """Dead letters now in the store, per reason, in two round trips whatever the keyspace holds.

    ``reasons`` are the reasons ever used (the fields of ``keys.DLQ_REASON_TOTALS``); pass them when
    already read to save a round trip.
    """
    names = sorted(counters.read_dead_reasons(client) if reasons is None else reasons)
    pipe = client.pipeline(transaction=False)
    for reason in names:
        pipe.zcard(keys.dlq_index_reason(reason))
    sizes = pipe.execute() if names else []
    return {reason: int(size) for reason, size in zip(names, sizes, strict=True) if size}


def purge_expired(
    client: redis.Redis, retention_s: float, *, now: float | None = None, limit: int = PURGE_PAGE
) -> int:
    """Delete the dead letters older than ``retention_s`` with their index entries (at most ``limit``
    per call, oldest first). Returns how many were deleted.

    The cumulative per-reason counters stay (they count what happened, not what is kept). One
    transaction per call: a crash leaves each letter either whole or gone.
    """
    now = time.time() if now is None else now
    ids = text_list(client.zrangebyscore(keys.DLQ_INDEX, "-inf", now - retention_s, start=0, num=limit))
    if not ids:
        return 0
    pipe = client.pipeline(transaction=True)
    for letter_id, raw in zip(ids, client.hmget(keys.DLQ_ITEMS, ids), strict=True):
        letter = _parse(raw)
        if letter is None:  # an index entry without a readable letter: drop both
            pipe.hdel(keys.DLQ_ITEMS, letter_id)
            pipe.zrem(keys.DLQ_INDEX, letter_id)
        else:
            remove(pipe, letter)
    pipe.execute()
    log.info("dead letters past their retention deleted", count=len(ids), retention_s=retention_s)
    return len(ids)


def _parse(raw: Any) -> DeadLetter | None:
    if raw is None:
        return None
    try:
        return DeadLetter.model_validate_json(text(raw))
    except ValidationError:
        return None

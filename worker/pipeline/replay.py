"""Operator actions on dead letters: replay after a fix, purge, export, and how a letter is shown.

Replay puts the record back into its connection's buffer with a fresh retry schedule (and, for
``missing_customer_key``, the key the operator now supplies), and removes the dead letter, in one
transaction. What cannot be replayed (the connection is gone, the message itself was invalid) is
reported with the reason and left in place. A dry run reports the same without changing anything.

A letter is shown or exported with every address masked (its ``email`` field, and addresses inside
``raw``, the message, the provider's excerpt and the stored request) unless the caller reveals it;
times are ISO 8601 UTC.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from producer.contract import UnsubscribeRequest
from worker.logs import redact_value
from worker.pipeline import buffer, counters, deadletters, status
from worker.pipeline.counters import Counter
from worker.pipeline.deadletters import DeadLetter
from worker.pipeline.expand import NO_TARGET, Unplannable, plan_connection
from worker.pipeline.status import DeliveryState
from worker.records import DeliveryRecord

if TYPE_CHECKING:
    from worker.pipeline.runtime import Runtime

EXPORT_FIELDS: Final = (
    "id", "reason", "message", "connection", "provider", "request_id", "target", "email",
    "status", "attempts", "first_attempt_at", "last_attempt_at", "dead_at", "excerpt",
)  # fmt: skip
#: Fields holding epoch seconds, shown and exported as ISO 8601 UTC.
TIME_FIELDS: Final = ("dead_at", "first_attempt_at", "last_attempt_at")


@dataclass
class ReplayReport:
    replayed: int = 0
    deliveries: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    #: Dry run only: letter id → the deliveries it would become (``connection target``).
    planned: dict[str, list[str]] = field(default_factory=dict)


def replay(
    rt: Runtime,
    letters: Iterable[DeadLetter],
    *,
    customer_keys: Mapping[str, str] | None = None,
    progress: Callable[[int], None] | None = None,
    dry_run: bool = False,
) -> ReplayReport:
    """Re-queue dead letters; ``customer_keys`` maps an address to the Customer Key now known.

    With ``dry_run`` nothing changes: the report says what would be replayed and what would not.
    """
    report = ReplayReport()
    for letter in letters:
        records, why_not = _records(rt, letter, customer_keys or {})
        if why_not:
            report.skipped[letter.id] = why_not
        elif dry_run:
            report.planned[letter.id] = [f"{r.connection} {r.target}" for r in records]
        else:
            _requeue(rt, letter, records)
        if not why_not:
            report.replayed += 1
            report.deliveries += len(records)
        if progress:
            progress(1)
    return report


def _records(
    rt: Runtime, letter: DeadLetter, keys_by_email: Mapping[str, str]
) -> tuple[list[DeliveryRecord], str]:
    now = time.time()
    if letter.record is not None:
        record = DeliveryRecord.model_validate(letter.record)
        try:
            conn = rt.settings.connection(record.connection)
        except KeyError:
            return [], f"connection {record.connection!r} is no longer configured"
        if not conn.enabled:
            return [], f"connection {record.connection!r} is disabled"
        fresh = record.model_copy(
            update={
                "attempts": 0,
                "first_attempt_at": None,
                "last_error": None,
                "held_since": None,
                "accepted_at": now,
                "customer_key": keys_by_email.get(record.email, record.customer_key),
            }
        )
        return [fresh], ""
    if letter.request is not None:
        return _replan(rt, letter, now)
    return [], "the message itself was invalid: fix it and publish it again (see `unsub dlq export`)"


def _replan(rt: Runtime, letter: DeadLetter, now: float) -> tuple[list[DeliveryRecord], str]:
    try:
        request = UnsubscribeRequest.model_validate(letter.request)
    except ValidationError:
        return [], "the stored request no longer validates"
    names = [letter.connection] if letter.connection else _unplanned_connections(rt, request)
    planned = [p for name in names for p in plan_connection(request, rt.settings, name, now)]
    problems = [p.message for p in planned if isinstance(p, Unplannable)]
    if problems:
        return [], "; ".join(problems)
    return [p for p in planned if isinstance(p, DeliveryRecord)], ""


def _unplanned_connections(rt: Runtime, request: UnsubscribeRequest) -> list[str]:
    """The connections a request names (or every enabled one) that have no delivery of it yet: what a
    letter for unknown connection names (kept without a connection) leaves to replay."""
    known = status.read(rt.redis, request.request_id)
    done = {d.connection for d in known.deliveries if d.target != NO_TARGET} if known else set()
    names = request.connections or [c.name for c in rt.settings.enabled_connections]
    return [name for name in names if name not in done]


def _requeue(rt: Runtime, letter: DeadLetter, records: list[DeliveryRecord]) -> None:
    now = time.time()
    pipe = rt.redis.pipeline(transaction=True)
    for record in records:
        buffer.add(pipe, record.connection, record.model_dump_json())
        replayed = status.for_record(record, DeliveryState.PENDING, now, message=f"replayed from {letter.id}")
        status.write(pipe, record.request_id, replayed, rt.settings.status_retention_s)
        counters.incr(pipe, record.connection, Counter.REPLAYED)
    deadletters.remove(pipe, letter)
    pipe.execute()


def purge(
    rt: Runtime, letters: Iterable[DeadLetter], *, progress: Callable[[int], None] | None = None
) -> int:
    """Delete dead letters for good. Returns how many were deleted."""
    deleted = 0
    for letter in letters:
        pipe = rt.redis.pipeline(transaction=True)
        deadletters.remove(pipe, letter)
        pipe.execute()
        deleted += 1
        if progress:
            progress(1)
    return deleted


def export_lines(letters: Iterable[DeadLetter], *, fmt: str, reveal: bool) -> Iterator[str]:
    """Dead letters as JSON lines or CSV (header first). Addresses masked unless ``reveal``."""
    if fmt == "csv":
        yield _csv_row(EXPORT_FIELDS)
        for letter in letters:
            row = _export_row(letter, reveal)
            yield _csv_row(tuple("" if row.get(f) is None else str(row[f]) for f in EXPORT_FIELDS))
    else:
        for letter in letters:
            yield json.dumps(_export_row(letter, reveal), separators=(",", ":")) + "\n"


def _export_row(letter: DeadLetter, reveal: bool) -> dict[str, Any]:
    row = shown(letter, reveal=reveal, exclude=("record", "request", "raw", "email", "email_masked"))
    row["email"] = letter.email if reveal else letter.email_masked
    return row


def shown(letter: DeadLetter, *, reveal: bool, exclude: Collection[str] = ()) -> dict[str, Any]:
    """A letter as an operator may see it: ISO times; unless ``reveal``, no clear address anywhere
    (the ``email`` field left out, addresses in every other field masked)."""
    row = letter.model_dump(mode="json", exclude={*exclude, *(() if reveal else ("email",))})
    for name in TIME_FIELDS:
        if name in row:
            row[name] = iso_time(row[name])
    if reveal:
        return row
    masked: dict[str, Any] = redact_value(row)
    return masked


def iso_time(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds (``2026-11-27T09:30:00.125Z``)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _csv_row(values: tuple[str, ...]) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(values)
    return out.getvalue()

"""Intake: validate requests, de-duplicate them, and record one pending delivery per target.

One call takes in a group of requests (from one or several intake messages) in **one** Redis
transaction: buffer entries, status, dead letters for what cannot be used, the address index with
its de-duplication windows, the counters and (``also_in_transaction``) the acknowledgement of the
messages they came from are written together or not at all. A message read again after its worker
died finds its request ids already taken in and adds nothing, so intake is idempotent.

Commands per request (no read of a key per record): ``HEXISTS`` of its status, ``HMGET`` of its
address's windows and ``HLEN`` of its address before the transaction (an address about to pass
``addresses.REQUESTS_KEPT`` request ids is trimmed then, one script); ``HDEL`` of an earlier intake
refusal of its id, ``HSET`` + ``EXPIRE`` of its status (every delivery in one hash) and of its
address, and one ``XADD`` per delivery inside it; counters once per transaction. An invalid request
with a usable id costs one ``HEXISTS`` more: a request id taken in is never marked failed by a later
invalid request.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from producer.contract import UnsubscribeRequest, parse_request
from producer.errors import InvalidRequestError
from worker import keys
from worker.logs import get_logger, mask_email
from worker.pipeline import addresses, buffer, counters, deadletters, status
from worker.pipeline.counters import IntakeCounter
from worker.pipeline.deadletters import DeadLetter, Reason
from worker.pipeline.expand import NO_TARGET, Unplannable, plan
from worker.pipeline.status import DeliveryState
from worker.records import DeliveryRecord
from worker.redis_batch import Batch

if TYPE_CHECKING:
    from worker.pipeline.runtime import Runtime

log = get_logger(__name__)

#: Status "connection" of a request that died at intake (its message or the request was invalid).
INTAKE_FIELD_CONNECTION = "intake"
#: Status field of a request id refused at intake.
_INTAKE_REFUSAL: Final = status.field_name(INTAKE_FIELD_CONNECTION, NO_TARGET)
#: The problem of a request candidate that is a JSON string (JSON text inside it is not read).
NOT_AN_OBJECT: Final = "message: expected a JSON object, got string"


class Taken(StrEnum):
    """What became of one item."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    INVALID = "invalid"


@dataclass(frozen=True)
class IntakeItem:
    """One request candidate as received, with a stable origin (task id and index, or entry id)."""

    origin: str
    payload: Any
    #: Set when the item is unusable before validation.
    problem: str | None = None


@dataclass
class IntakeReport:
    requests: int = 0
    accepted: int = 0
    duplicate_requests: int = 0
    invalid: int = 0
    deliveries: int = 0
    deduplicated_deliveries: int = 0
    dead_lettered: int = 0
    #: Whole messages that could not be used (each one dead letter).
    refused_messages: int = 0
    #: What became of each item, in order.
    taken: list[Taken] = field(default_factory=list)
    #: Connections that got records.
    touched: set[str] = field(default_factory=set)

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int)}

    def add(self, other: IntakeReport) -> None:
        for name, value in other.as_dict().items():
            setattr(self, name, getattr(self, name) + value)
        self.taken += other.taken
        self.touched |= other.touched


@dataclass
class _Accepted:
    request: UnsubscribeRequest
    planned: list[DeliveryRecord | Unplannable]
    #: The address hash's de-duplication windows for this request's deliveries (field → holder).
    windows: dict[str, str | None] = field(default_factory=dict)
    #: How many fields the address hash has (requests and windows).
    address_fields: int = 0


def items_from_payloads(
    payloads: Sequence[Any], origin: str, problems: Mapping[int, str] | None = None
) -> list[IntakeItem]:
    """One item per request candidate of a message; ``problems`` are those found while reading it
    (a request nested too deep), by position."""
    found = problems or {}
    return [IntakeItem(f"{origin}:{i}", p, found.get(i)) for i, p in enumerate(payloads)]


def run_intake(
    rt: Runtime,
    items: Iterable[IntakeItem],
    *,
    refused: Sequence[DeadLetter] = (),
    also_in_transaction: Callable[[Any], None] | None = None,
    now: float | None = None,
) -> IntakeReport:
    """Take in requests (and dead-letter the ``refused`` messages) in one transaction."""
    now = time.time() if now is None else now
    report = IntakeReport()
    accepted: list[_Accepted] = []
    invalid: list[DeadLetter] = []
    slots: list[int] = []  # per item: index into accepted, or -1 invalid
    for item in items:
        report.requests += 1
        parsed = _parse(item)
        if isinstance(parsed, list):
            invalid.append(_invalid_letter(item, parsed, now))
            slots.append(-1)
            continue
        slots.append(len(accepted))
        accepted.append(_Accepted(parsed, plan(parsed, rt.settings, now)))
    fresh = _look_up(rt, accepted)
    _trim_addresses(rt, accepted, fresh, now)
    taken = _taken_in(rt, invalid, accepted)
    pipe = Batch(rt.redis)
    _write_accepted(rt, pipe, accepted, fresh, report, now)
    _write_invalid(rt, pipe, invalid, report, taken)
    for letter in refused:
        deadletters.write(pipe, letter)
        report.refused_messages += 1
        report.dead_lettered += 1
    report.taken = [
        Taken.INVALID if slot < 0 else (Taken.ACCEPTED if fresh[slot] else Taken.DUPLICATE) for slot in slots
    ]
    _count(pipe, report)
    if also_in_transaction is not None:
        also_in_transaction(pipe)
    pipe.execute()
    if report.invalid or report.refused_messages:
        log.warning(
            "invalid requests and messages dead-lettered",
            invalid=report.invalid,
            refused_messages=report.refused_messages,
            requests=report.requests,
        )
    return report


def _parse(item: IntakeItem) -> UnsubscribeRequest | list[str]:
    if item.problem:
        return [item.problem]
    if isinstance(item.payload, str | bytes):  # parse_request would read it as JSON text: a second,
        return [NOT_AN_OBJECT]  # unbounded decoding of what the contract says must be an object
    try:
        return parse_request(item.payload)
    except InvalidRequestError as exc:
        return exc.problems
    except (RecursionError, ValueError, TypeError) as exc:  # the contract must not be crashed by data
        return [f"message: cannot be read as a request ({type(exc).__name__})"]


def _look_up(rt: Runtime, accepted: list[_Accepted]) -> list[bool]:
    """Which requests are new (not taken in before, nor earlier in this group); loads their windows."""
    if not accepted:
        return []
    windowed = rt.settings.dedupe_window_s > 0
    pipe = Batch(rt.redis, transaction=False)
    for item in accepted:
        status.queue_seen(pipe, item.request.request_id)
        fields = _window_fields(item) if windowed else []
        if fields:
            addresses.queue_windows(pipe, item.request.email, fields)
        addresses.queue_size(pipe, item.request.email)
    replies = iter(pipe.execute())
    fresh: list[bool] = []
    ids: set[str] = set()
    for item in accepted:
        seen = bool(next(replies))
        fields = _window_fields(item) if windowed else []
        if fields:
            item.windows = dict(zip(fields, next(replies), strict=True))
        item.address_fields = int(next(replies))
        request_id = item.request.request_id
        fresh.append(not seen and request_id not in ids)
        ids.add(request_id)
    return fresh


def _trim_addresses(rt: Runtime, accepted: list[_Accepted], fresh: list[bool], now: float) -> None:
    """Trim the addresses that the new requests would take past ``addresses.REQUESTS_KEPT``."""
    adding = Counter(item.request.email for item, new in zip(accepted, fresh, strict=True) if new)
    fields = {item.request.email: item.address_fields for item in accepted}
    for email, count in adding.items():
        if addresses.must_trim(fields[email], count):
            addresses.trim(rt.redis, email, adding=count, now=now, window_s=rt.settings.dedupe_window_s)


def _window_fields(item: _Accepted) -> list[str]:
    return [
        addresses.window_field(p.connection, p.target) for p in item.planned if isinstance(p, DeliveryRecord)
    ]


def _write_accepted(
    rt: Runtime, pipe: Any, accepted: list[_Accepted], fresh: list[bool], report: IntakeReport, now: float
) -> None:
    settings = rt.settings
    window_s = settings.dedupe_window_s
    held: dict[tuple[str, str], str] = {}  # (email, window field) → request id, within this group
    for item, new in zip(accepted, fresh, strict=True):
        if not new:
            report.duplicate_requests += 1
            continue
        request = item.request
        report.accepted += 1
        deliveries: list[status.DeliveryStatus] = []
        opened: dict[str, str] = {}
        for planned in item.planned:
            if isinstance(planned, Unplannable):
                deliveries.append(_unplannable(pipe, request, planned, now))
                report.dead_lettered += 1
                continue
            window = addresses.window_field(planned.connection, planned.target)
            holder = held.get((request.email, window)) or addresses.open_holder(
                item.windows.get(window), now, window_s
            )
            if holder:
                deliveries.append(
                    status.for_record(planned, DeliveryState.DEDUPLICATED, now, duplicate_of=holder)
                )
                report.deduplicated_deliveries += 1
                continue
            if window_s > 0:
                opened[window] = addresses.window_value(request.request_id, now)
                held[(request.email, window)] = request.request_id
            buffer.add(pipe, planned.connection, planned.model_dump_json())
            deliveries.append(status.for_record(planned, DeliveryState.PENDING, now))
            report.deliveries += 1
            report.touched.add(planned.connection)
        names = sorted({p.connection for p in item.planned})
        meta = status.meta_for(request, now, names)
        # An invalid request with this id may have come first: its intake refusal is not this one's.
        pipe.hdel(keys.request_status(request.request_id), _INTAKE_REFUSAL)
        status.write_request(pipe, meta, deliveries, settings.status_retention_s)
        addresses.write(pipe, request.email, request.request_id, now, opened, settings.status_retention_s)


def _unplannable(
    pipe: Any, request: UnsubscribeRequest, failure: Unplannable, now: float
) -> status.DeliveryStatus:
    letter = DeadLetter(
        id=deadletters.delivery_letter_id(f"{request.request_id}|{failure.connection}|{NO_TARGET}"),
        reason=failure.reason,
        message=failure.message,
        dead_at=now,
        connection=failure.connection
        if failure.known_connection and failure.connection != NO_TARGET
        else None,
        request_id=request.request_id,
        target=NO_TARGET,
        email_masked=mask_email(request.email),
        email=request.email,
        request=request.model_dump(mode="json"),
    )
    deadletters.write(pipe, letter)
    return status.DeliveryStatus(
        connection=failure.connection,
        target=NO_TARGET,
        state=DeliveryState.DEAD_LETTERED,
        updated_at=now,
        accepted_at=now,
        reason=failure.reason,
        message=failure.message,
    )


def _taken_in(rt: Runtime, invalid: list[DeadLetter], accepted: list[_Accepted]) -> set[str]:
    """The usable ids of invalid requests that belong to a request taken in (before, or in this group)."""
    ids = sorted({i for i in (letter.request_id for letter in invalid) if i and status.usable_request_id(i)})
    if not ids:
        return set()
    pipe = Batch(rt.redis, transaction=False)
    for request_id in ids:
        status.queue_seen(pipe, request_id)
    seen = {request_id for request_id, found in zip(ids, pipe.execute(), strict=True) if found}
    return seen | ({a.request.request_id for a in accepted} & set(ids))


def _write_invalid(
    rt: Runtime, pipe: Any, invalid: list[DeadLetter], report: IntakeReport, taken: set[str]
) -> None:
    """Dead letters for invalid requests; one with a usable id gets an intake status, unless the id
    is a request's that was taken in (a publisher reusing it must not mark that request failed)."""
    retention = rt.settings.status_retention_s
    for letter in invalid:
        deadletters.write(pipe, letter)
        report.invalid += 1
        report.dead_lettered += 1
        if (
            letter.request_id
            and status.usable_request_id(letter.request_id)
            and letter.request_id not in taken
        ):
            died = status.DeliveryStatus(
                connection=INTAKE_FIELD_CONNECTION,
                target=NO_TARGET,
                state=DeliveryState.DEAD_LETTERED,
                updated_at=letter.dead_at,
                reason=letter.reason,
                message=letter.message[:500],
            )
            status.write(pipe, letter.request_id, died, retention)


def _count(pipe: Any, report: IntakeReport) -> None:
    counters.incr_intake_many(
        pipe,
        {
            IntakeCounter.REQUESTS: report.requests,
            IntakeCounter.ACCEPTED: report.accepted,
            IntakeCounter.DUPLICATES: report.duplicate_requests,
            IntakeCounter.INVALID: report.invalid,
            IntakeCounter.DELIVERIES: report.deliveries,
            IntakeCounter.DEDUPLICATED: report.deduplicated_deliveries,
            IntakeCounter.REFUSED_MESSAGES: report.refused_messages,
        },
    )


def _invalid_letter(item: IntakeItem, problems: list[str], now: float) -> DeadLetter:
    payload = item.payload
    fields = payload if isinstance(payload, dict) else {}
    email = fields.get("email") if isinstance(fields.get("email"), str) else None
    request_id = fields.get("request_id") if isinstance(fields.get("request_id"), str) else None
    # invalid_email only for an address that is there but wrong; no address at all is a bad message.
    only_email = email is not None and bool(problems) and all(p.startswith("email:") for p in problems)
    return DeadLetter(
        id=deadletters.message_letter_id(item.origin),
        reason=Reason.INVALID_EMAIL if only_email else Reason.INVALID_MESSAGE,
        message="; ".join(problems)[:2000],
        dead_at=now,
        request_id=request_id[:128] if request_id else None,
        email_masked=mask_email(email[:320]) if email else None,
        raw=raw_text(payload),
        problems=problems[:50],
    )


def message_letter(origin: str, reason: Reason, problems: list[str], raw: str, now: float) -> DeadLetter:
    """The dead letter of a whole message that cannot be used."""
    return DeadLetter(
        id=deadletters.message_letter_id(origin),
        reason=reason,
        message="; ".join(problems)[:2000],
        dead_at=now,
        raw=raw[: deadletters.RAW_MESSAGE_CHARS],
        problems=problems[:50],
    )


def raw_text(payload: Any) -> str:
    """A request candidate as text, cut, for its dead letter."""
    if isinstance(payload, str):
        text = payload
    elif isinstance(payload, bytes):
        text = payload.decode("utf-8", "backslashreplace")
    else:
        try:
            text = json.dumps(payload, ensure_ascii=False, default=str)  # a Flaw reads <refused: ...>
        except (TypeError, ValueError, RecursionError):
            text = repr(payload)[: deadletters.RAW_MESSAGE_CHARS]
    return text[: deadletters.RAW_MESSAGE_CHARS]

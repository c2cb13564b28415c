"""Intake: validate requests, de-duplicate them, and record one pending delivery per target.

One call handles one message's requests (a Celery intake task, or entries of the language-neutral
stream) in **one** Redis transaction: buffer entries, status, dead letters for what is invalid, the
de-duplication keys and the counters are written together or not at all. A redelivered message
(its worker died) finds its request ids already seen and adds nothing, so intake is idempotent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from producer.contract import UnsubscribeRequest, parse_request
from producer.errors import InvalidRequestError
from worker import keys
from worker.logs import get_logger, mask_email
from worker.pipeline import buffer, counters, deadletters, status
from worker.pipeline.counters import IntakeCounter
from worker.pipeline.deadletters import DeadLetter, Reason
from worker.pipeline.expand import NO_TARGET, Unplannable, plan
from worker.pipeline.status import DeliveryState
from worker.records import DeliveryRecord
from worker.redis_client import text

if TYPE_CHECKING:
    from worker.pipeline.runtime import Runtime

log = get_logger(__name__)


@dataclass(frozen=True)
class IntakeItem:
    """One message as received, with a stable origin (task id and index, or stream entry id)."""

    origin: str
    payload: Any
    #: Set when the message is unusable before validation (e.g. a stream entry without its field).
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

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class _Accepted:
    request: UnsubscribeRequest
    planned: list[DeliveryRecord | Unplannable]


def items_from_task_payload(payload: Any, origin: str) -> list[IntakeItem]:
    """A Celery intake argument is one request or a list of them."""
    if isinstance(payload, list):
        return [IntakeItem(f"{origin}:{i}", p) for i, p in enumerate(payload)]
    return [IntakeItem(f"{origin}:0", payload)]


def run_intake(
    rt: Runtime, items: Iterable[IntakeItem], *, extra: Callable[[Any], None] | None = None
) -> tuple[IntakeReport, set[str]]:
    """Take in one message's requests. Returns the report and the connections that got records."""
    now = time.time()
    report = IntakeReport()
    accepted: list[_Accepted] = []
    invalid: list[DeadLetter] = []
    for item in items:
        report.requests += 1
        if item.problem:
            invalid.append(_invalid_letter(item, [item.problem], now))
            continue
        try:
            request = parse_request(item.payload)
        except InvalidRequestError as exc:
            invalid.append(_invalid_letter(item, exc.problems, now))
            continue
        accepted.append(_Accepted(request, plan(request, rt.settings, now)))
    fresh = _drop_seen_requests(rt, accepted, report)
    windows = _open_windows(rt, fresh)
    pipe = rt.redis.pipeline(transaction=True)
    touched = _write(rt, pipe, fresh, windows, invalid, report, now)
    counters.incr_intake(pipe, IntakeCounter.REQUESTS, report.requests)
    counters.incr_intake(pipe, IntakeCounter.ACCEPTED, report.accepted)
    counters.incr_intake(pipe, IntakeCounter.DUPLICATES, report.duplicate_requests)
    counters.incr_intake(pipe, IntakeCounter.INVALID, report.invalid)
    counters.incr_intake(pipe, IntakeCounter.DELIVERIES, report.deliveries)
    counters.incr_intake(pipe, IntakeCounter.DEDUPLICATED, report.deduplicated_deliveries)
    if extra is not None:
        extra(pipe)
    pipe.execute()
    if report.invalid:
        log.warning("invalid requests dead-lettered", invalid=report.invalid, requests=report.requests)
    return report, touched


def _drop_seen_requests(rt: Runtime, accepted: list[_Accepted], report: IntakeReport) -> list[_Accepted]:
    """Keep requests whose id was not seen before (nor earlier in this message)."""
    if not accepted:
        return []
    pipe = rt.redis.pipeline(transaction=False)
    for item in accepted:
        pipe.exists(keys.seen_request(item.request.request_id))
    seen_before = pipe.execute()
    fresh, ids = [], set()
    for item, seen in zip(accepted, seen_before, strict=True):
        if seen or item.request.request_id in ids:
            report.duplicate_requests += 1
            continue
        ids.add(item.request.request_id)
        fresh.append(item)
    return fresh


def _open_windows(rt: Runtime, fresh: list[_Accepted]) -> dict[str, str | None]:
    """For each delivery's de-duplication key, the request id already holding it (or None)."""
    if rt.settings.dedupe_window_s <= 0:
        return {}
    window_keys = [
        keys.dedupe_window(p.email, p.connection, p.target)
        for item in fresh
        for p in item.planned
        if isinstance(p, DeliveryRecord)
    ]
    if not window_keys:
        return {}
    holders = [text(v) if v is not None else None for v in rt.redis.mget(window_keys)]
    return dict(zip(window_keys, holders, strict=True))


def _write(
    rt: Runtime,
    pipe: Any,
    fresh: list[_Accepted],
    windows: dict[str, str | None],
    invalid: list[DeadLetter],
    report: IntakeReport,
    now: float,
) -> set[str]:
    settings = rt.settings
    retention = settings.status_retention_s
    touched: set[str] = set()
    for item in fresh:
        request = item.request
        pipe.set(keys.seen_request(request.request_id), "1", ex=int(retention))
        names = sorted({p.connection for p in item.planned})
        status.write_meta(pipe, status.meta_for(request, now, names), request.email, retention)
        report.accepted += 1
        for planned in item.planned:
            if isinstance(planned, Unplannable):
                _write_unplannable(pipe, request, planned, now, retention)
                report.dead_lettered += 1
                continue
            window_key = keys.dedupe_window(planned.email, planned.connection, planned.target)
            holder = windows.get(window_key)
            if holder:
                _write_deduplicated(pipe, planned, holder, now, retention)
                report.deduplicated_deliveries += 1
                continue
            if settings.dedupe_window_s > 0:
                pipe.set(window_key, request.request_id, ex=int(settings.dedupe_window_s))
                windows[window_key] = request.request_id
            buffer.add(pipe, planned.connection, planned.model_dump_json())
            status.write(
                pipe, request.request_id, status.for_record(planned, DeliveryState.PENDING, now), retention
            )
            report.deliveries += 1
            touched.add(planned.connection)
    for letter in invalid:
        deadletters.write(pipe, letter)
        report.invalid += 1
        report.dead_lettered += 1
    return touched


def _write_unplannable(
    pipe: Any, request: UnsubscribeRequest, failure: Unplannable, now: float, retention: float
) -> None:
    letter = DeadLetter(
        id=deadletters.delivery_letter_id(f"{request.request_id}|{failure.connection}|{NO_TARGET}"),
        reason=failure.reason,
        message=failure.message,
        dead_at=now,
        connection=failure.connection if failure.connection != NO_TARGET else None,
        request_id=request.request_id,
        target=NO_TARGET,
        email_masked=mask_email(request.email),
        email=request.email,
        request=request.model_dump(mode="json"),
    )
    deadletters.write(pipe, letter)
    delivery = status.DeliveryStatus(
        connection=failure.connection,
        target=NO_TARGET,
        state=DeliveryState.DEAD_LETTERED,
        updated_at=now,
        accepted_at=now,
        reason=failure.reason,
        message=failure.message,
    )
    status.write(pipe, request.request_id, delivery, retention)


def _write_deduplicated(pipe: Any, record: DeliveryRecord, holder: str, now: float, retention: float) -> None:
    delivery = status.for_record(record, DeliveryState.DEDUPLICATED, now, duplicate_of=holder)
    status.write(pipe, record.request_id, delivery, retention)


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
        raw=_raw_text(payload),
        problems=problems[:50],
    )


def _raw_text(payload: Any) -> str:
    if isinstance(payload, str):
        text = payload
    elif isinstance(payload, bytes):
        text = payload.decode("utf-8", "replace")
    else:
        try:
            text = json.dumps(payload, default=str)
        except (TypeError, ValueError):
            text = repr(payload)
    return text[: deadletters.RAW_MESSAGE_CHARS]

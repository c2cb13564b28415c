"""Language-neutral intake: plain JSON messages in a Redis stream, no Celery envelope.

A service in any language runs ``XADD unsub:intake:json * message '<json>'`` where the JSON is one
request object (contract v1) or an array of them. An intake task drains the stream through the
same validation, de-duplication and dead-lettering as Celery messages; each entry is acknowledged
and deleted in the same transaction that records its requests.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

import redis

from producer import names
from worker import keys
from worker.pipeline import streams
from worker.pipeline.intake import IntakeItem, IntakeReport, run_intake

if TYPE_CHECKING:
    from worker.pipeline.runtime import Runtime

#: Entries read per transaction.
READ_COUNT: Final = 200
#: An entry claimed by a worker silent this long is taken over.
RECLAIM_IDLE_S: Final = 60.0


def ensure_group(client: redis.Redis) -> None:
    streams.ensure_group(client, names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP)


def has_waiting(client: redis.Redis) -> bool:
    return bool(client.xlen(names.NATIVE_INTAKE_STREAM))


def drain_native(rt: Runtime, *, budget_s: float) -> tuple[IntakeReport, set[str]]:
    """Take in what waits in the stream, for at most ``budget_s``."""
    ensure_group(rt.redis)
    total = IntakeReport()
    touched: set[str] = set()
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        entries = _claim(rt)
        if not entries:
            break
        report, conns = run_intake(rt, _items(entries), extra=_acknowledge([eid for eid, _ in entries]))
        for field in total.__dataclass_fields__:
            setattr(total, field, getattr(total, field) + getattr(report, field))
        touched |= conns
    return total, touched


def _claim(rt: Runtime) -> list[tuple[str, dict[str, str]]]:
    stream, group, me = names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP, rt.consumer_name
    claims = streams.claim_stale(rt.redis, stream, group, me, min_idle_s=RECLAIM_IDLE_S, count=READ_COUNT)
    claims = claims or streams.read_new(rt.redis, stream, group, me, READ_COUNT)
    return [(c.entry_id, c.fields) for c in claims]


def _items(entries: list[tuple[str, dict[str, str]]]) -> list[IntakeItem]:
    items: list[IntakeItem] = []
    for entry_id, fields in entries:
        origin = f"native:{entry_id}"
        raw = fields.get(names.NATIVE_INTAKE_FIELD)
        if raw is None:
            problem = f"message: the stream entry has no {names.NATIVE_INTAKE_FIELD!r} field"
            items.append(IntakeItem(origin, dict(fields), problem=problem))
            continue
        try:
            decoded: Any = json.loads(raw)
        except (ValueError, RecursionError):  # deeply nested JSON overflows json's recursion limit
            items.append(IntakeItem(origin, raw))  # parse_request reports the JSON error
            continue
        if isinstance(decoded, list):
            items.extend(IntakeItem(f"{origin}:{i}", p) for i, p in enumerate(decoded))
        else:
            items.append(IntakeItem(origin, decoded))
    return items


def _acknowledge(entry_ids: list[str]) -> Any:
    def queue(pipe: Any) -> None:
        for entry_id in entry_ids:
            pipe.xack(names.NATIVE_INTAKE_STREAM, keys.NATIVE_INTAKE_GROUP, entry_id)
            pipe.xdel(names.NATIVE_INTAKE_STREAM, entry_id)

    return queue

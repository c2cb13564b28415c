"""Request status: per request, per delivery, the state and its timestamps.

This is the evidence a compliance officer asks for ("when did we tell provider X about this
opt-out?"). One hash per request (``keys.request_status``), one field per delivery plus ``_meta``,
kept for ``status_retention_s`` after the last change. Looked up by request id, or by address
through a hashed address index.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Final

import redis
from pydantic import BaseModel, ConfigDict

from worker import keys
from worker.logs import mask_email
from worker.pipeline import addresses
from worker.records import DeliveryRecord
from worker.redis_client import text_map

META_FIELD: Final = "_meta"
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")


class DeliveryState(StrEnum):
    PENDING = "pending"
    RETRYING = "retrying"
    DELIVERED = "delivered"
    DEAD_LETTERED = "dead_lettered"
    #: The same address, connection and target was already accepted inside the de-duplication window.
    DEDUPLICATED = "deduplicated"


class DeliveryStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    connection: str
    target: str
    state: DeliveryState
    updated_at: float
    accepted_at: float | None = None
    attempts: int = 0
    next_attempt_at: float | None = None
    delivered_at: float | None = None
    reason: str | None = None
    message: str | None = None
    duplicate_of: str | None = None


class RequestMeta(BaseModel):
    model_config = ConfigDict(frozen=True)

    request_id: str
    email_masked: str
    scope: str
    source: str
    requested_at: str
    accepted_at: float
    connections: list[str]


class RequestStatus(BaseModel):
    meta: RequestMeta | None
    deliveries: list[DeliveryStatus]


def field_name(connection: str, target: str) -> str:
    return f"{connection}|{target}"


def queue_seen(pipe: Any, request_id: str) -> None:
    """Queue whether a request was taken in before (its status has the request's ``_meta``)."""
    pipe.hexists(keys.request_status(request_id), META_FIELD)


def usable_request_id(request_id: str) -> bool:
    """Whether an id from an invalid message may name a status key (the contract's id pattern)."""
    return bool(_REQUEST_ID.fullmatch(request_id))


def write_request(pipe: Any, meta: RequestMeta, deliveries: list[DeliveryStatus], retention_s: float) -> None:
    """A request's whole status as intake takes it in: one HSET and one EXPIRE."""
    key = keys.request_status(meta.request_id)
    fields = {META_FIELD: meta.model_dump_json()}
    for delivery in deliveries:
        fields[field_name(delivery.connection, delivery.target)] = delivery.model_dump_json(exclude_none=True)
    pipe.hset(key, mapping=fields)
    pipe.expire(key, int(retention_s))


def write(pipe: Any, request_id: str, status: DeliveryStatus, retention_s: float) -> None:
    key = keys.request_status(request_id)
    pipe.hset(key, field_name(status.connection, status.target), status.model_dump_json(exclude_none=True))
    pipe.expire(key, int(retention_s))


def for_record(record: DeliveryRecord, state: DeliveryState, now: float, **fields: Any) -> DeliveryStatus:
    """A status for one record's delivery."""
    return DeliveryStatus(
        connection=record.connection,
        target=record.target,
        state=state,
        updated_at=now,
        accepted_at=record.accepted_at,
        **fields,
    )


def meta_for(record_like: Any, accepted_at: float, connections: list[str]) -> RequestMeta:
    return RequestMeta(
        request_id=record_like.request_id,
        email_masked=mask_email(record_like.email),
        scope=str(record_like.scope),
        source=str(record_like.source),
        requested_at=record_like.requested_at.isoformat(),
        accepted_at=accepted_at,
        connections=connections,
    )


def read(client: redis.Redis, request_id: str) -> RequestStatus | None:
    """Everything known about one request, or None if unknown (or past retention)."""
    raw = text_map(client.hgetall(keys.request_status(request_id)))
    if not raw:
        return None
    meta_json = raw.pop(META_FIELD, None)
    deliveries = sorted(
        (DeliveryStatus.model_validate_json(v) for v in raw.values()), key=lambda d: (d.connection, d.target)
    )
    meta = RequestMeta.model_validate_json(meta_json) if meta_json else None
    return RequestStatus(meta=meta, deliveries=deliveries)


def request_ids_for_email(client: redis.Redis, email: str) -> list[str]:
    return addresses.request_ids(client, email)

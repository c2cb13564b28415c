"""From one request to its deliveries: one record per target connection and list/group.

Requests whose delivery cannot be planned (unknown connection, list scope without a list, a provider
type the planner has no branch for) produce a :class:`Unplannable` instead, which intake
dead-letters with the reason. Nothing is planned wider than the request asked, except for providers
whose only opt-out is account-wide (honouring more than asked is lawful; less is not).
"""

from __future__ import annotations

from dataclasses import dataclass

from producer.contract import UnsubscribeRequest
from worker.pipeline.deadletters import Reason
from worker.providers import provider
from worker.records import DeliveryRecord
from worker.settings import Connection, Settings

#: Status field target used for failures that have no target.
NO_TARGET = "-"


@dataclass(frozen=True)
class Unplannable:
    connection: str
    reason: Reason
    message: str
    #: False for names no configured connection has: nothing is kept per such name (no index, no
    #: counters), so a flood of made-up names cannot grow Redis.
    known_connection: bool = True


Planned = DeliveryRecord | Unplannable


def plan(request: UnsubscribeRequest, settings: Settings, accepted_at: float) -> list[Planned]:
    """Every delivery (or reason it cannot be delivered) for one request."""
    names = request.connections or [c.name for c in settings.enabled_connections]
    if not names:
        return [Unplannable(NO_TARGET, Reason.UNKNOWN_CONNECTION, "no connection is configured and enabled")]
    configured = {c.name for c in settings.connections}
    unknown = [name for name in names if name not in configured]
    planned: list[Planned] = [_unknown(unknown)] if unknown else []
    for name in names:
        if name in configured:
            planned.extend(_for_connection(request, settings, name, accepted_at))
    return planned


#: Unknown names quoted in the one dead letter a request gets for them.
SHOWN_UNKNOWN_NAMES = 5


def _unknown(names: list[str]) -> Unplannable:
    """One dead letter per request for every name it gives that is not configured."""
    shown = ", ".join(repr(n) for n in names[:SHOWN_UNKNOWN_NAMES])
    more = f" and {len(names) - SHOWN_UNKNOWN_NAMES} more" if len(names) > SHOWN_UNKNOWN_NAMES else ""
    message = f"no connection named {shown}{more} is configured"
    return Unplannable(NO_TARGET, Reason.UNKNOWN_CONNECTION, message, known_connection=False)


def plan_connection(
    request: UnsubscribeRequest, settings: Settings, name: str, accepted_at: float
) -> list[Planned]:
    """The deliveries of one request to one connection (replay of an intake dead letter)."""
    return _for_connection(request, settings, name, accepted_at)


def _for_connection(
    request: UnsubscribeRequest, settings: Settings, name: str, accepted_at: float
) -> list[Planned]:
    try:
        conn = settings.connection(name)
    except KeyError:
        return [_unknown([name])]
    if not conn.enabled:
        return [Unplannable(name, Reason.CONNECTION_DISABLED, f"connection {name!r} is disabled")]
    targets = _targets(request, conn)
    if isinstance(targets, Unplannable):
        return [targets]
    target_spec = request.target_for(name)
    return [
        DeliveryRecord(
            request_id=request.request_id,
            connection=name,
            email=request.email,
            target=target,
            source=request.source,
            reason=request.reason,
            customer_key=request.customer_key_for(name),
            contact_id=target_spec.contact_id,
            requested_at=request.requested_at,
            accepted_at=accepted_at,
        )
        for target in targets
    ]


def _targets(request: UnsubscribeRequest, conn: Connection) -> list[str] | Unplannable:
    """The connection's provider plans the targets; none means the request names nothing it can honour."""
    try:
        planned = provider(conn.type).targets(request, conn)
    except KeyError:
        return Unplannable(conn.name, Reason.UNKNOWN_CONNECTION, f"no provider of type {conn.type!r}")
    if not planned:
        message = f"scope=list but neither the request nor connection {conn.name!r} names a list or group"
        return Unplannable(conn.name, Reason.NO_LIST_TARGET, message)
    return planned

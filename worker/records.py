"""The delivery record: one request, to one connection, for one target. What the buffers hold."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict

from producer.contract import Source

#: Bump when the stored shape changes incompatibly; readers reject what they do not know.
RECORD_VERSION: Final = 1


class TargetKind(StrEnum):
    """What a delivery unsubscribes the address from."""

    ACCOUNT = "account"  # the whole account the connection points at (CC, easy.tools)
    ALL_ACCOUNTS = "all_accounts"  # CC partner global_unsubscribe: every client account
    GLOBAL = "global"  # WhatCounts global opt-out, Insider global unsubscribe
    LIST = "list"  # WhatCounts list (target "list:<id>")
    GROUP = "group"  # Insider unsubscribe group (target "group:<name>")


def make_target(kind: TargetKind, value: str | None = None) -> str:
    return f"{kind.value}:{value}" if value is not None else kind.value


class DeliveryRecord(BaseModel):
    """One unit of delivery work. Serialised as JSON into the per-connection buffer stream."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    v: Literal[1] = RECORD_VERSION
    request_id: str
    connection: str
    email: str
    target: str
    source: Source = Source.CONTACT
    reason: str | None = None
    customer_key: str | None = None
    contact_id: str | None = None
    requested_at: datetime
    #: When intake accepted it (epoch seconds): the retry schedule's maximum age counts from here.
    accepted_at: float
    attempts: int = 0
    first_attempt_at: float | None = None
    last_error: str | None = None
    #: When the breaker or refused credentials first set it aside (epoch seconds): a record held
    #: again while it waits is counted ``held`` only once.
    held_since: float | None = None

    @property
    def delivery_id(self) -> str:
        """Stable identity of this delivery (request, connection, target)."""
        return f"{self.request_id}|{self.connection}|{self.target}"

    @property
    def target_kind(self) -> TargetKind:
        return _KINDS.get(self.target.partition(":")[0]) or TargetKind(self.target.partition(":")[0])

    @property
    def target_value(self) -> str | None:
        _, sep, value = self.target.partition(":")
        return value if sep else None


#: Target kinds by their text (a dict lookup: much cheaper than calling the enum, on a hot path).
_KINDS: Final = {kind.value: kind for kind in TargetKind}

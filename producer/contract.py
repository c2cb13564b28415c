"""Message contract v1: the unsubscribe request an upstream service publishes.

The pydantic model below is the source of truth. ``producer/schema/unsubscribe-request.v1.json``
is generated from it (``python -m producer.contract > producer/schema/unsubscribe-request.v1.json``)
and a test fails when the two drift. ``docs/message-contract.md`` explains every field.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from producer.errors import InvalidRequestError

CONTRACT_VERSION: Final = 1
SCHEMA_ID: Final = "https://unsub-relay.invalid/schema/unsubscribe-request.v1.json"

#: Longest address SMTP allows (RFC 5321 path limit less the angle brackets).
MAX_EMAIL_LENGTH: Final = 254
#: Longest free-text reason we accept; adapters cut it to each provider's own limit.
MAX_REASON_LENGTH: Final = 1000


class Scope(StrEnum):
    """How wide the opt-out is."""

    #: The broadest opt-out the provider offers (WhatCounts global opt-out, Insider global list, ...).
    GLOBAL = "global"
    #: One list or group per connection, named in ``targets`` or the connection's default.
    LIST = "list"


class Source(StrEnum):
    """Who initiated the opt-out (Constant Contact's ``update_source``)."""

    CONTACT = "Contact"
    ACCOUNT = "Account"
    SYSTEM = "System"


def normalize_email(value: str) -> str:
    """Validate an address's syntax and return it in canonical form (trimmed, lower case)."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False, allow_display_name=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address ({exc})") from None
    return checked.normalized.lower()


Email = Annotated[
    str,
    Field(min_length=3, max_length=MAX_EMAIL_LENGTH, json_schema_extra={"format": "email"}),
    AfterValidator(normalize_email),
]
ConnectionName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
RequestId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")]
ListId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# WhatCounts separates records with '^' and fields with ',': neither may appear in a value.
CustomerKey = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\^,\r\n]+$")]
ContactId = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$")]
GroupName = Annotated[str, Field(min_length=3, max_length=29)]


def new_request_id() -> str:
    """A fresh idempotency key, used when the publisher gives none."""
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class ConnectionTarget(BaseModel):
    """What to unsubscribe from on one connection, and the identifiers that connection needs."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    list_ids: list[ListId] = Field(
        default_factory=list,
        max_length=50,
        description="WhatCounts list ids for scope=list (one delivery per list).",
    )
    group: GroupName | None = Field(default=None, description="Insider unsubscribe group for scope=list.")
    all_accounts: bool = Field(
        default=False,
        description="Constant Contact partner: unsubscribe from every client account of the partner "
        "(global_unsubscribe).",
    )
    customer_key: CustomerKey | None = Field(
        default=None, description="WhatCounts Customer Key for this connection (overrides the top-level one)."
    )
    contact_id: ContactId | None = Field(
        default=None,
        description="Provider contact id: Constant Contact contact_id or easy.tools UUID. Saves a lookup.",
    )

    @field_validator("list_ids")
    @classmethod
    def _no_global_list(cls, value: list[str]) -> list[str]:
        if "0" in value:
            raise ValueError("list id 0 means every list: use scope=global instead")
        if len(set(value)) != len(value):
            raise ValueError("list ids must be unique")
        return value


class UnsubscribeRequest(BaseModel):
    """One person's opt-out, to be carried to one or more provider connections."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        str_strip_whitespace=True,
        title="UnsubscribeRequest",
        json_schema_extra={"$id": SCHEMA_ID},
    )

    version: Literal[1] = Field(default=1, description="Contract version.")
    request_id: RequestId = Field(
        default_factory=new_request_id,
        description="Idempotency key: a request id seen before is not delivered again. Generated if absent.",
    )
    email: Email = Field(description="The address that opted out. Validated and normalised to lower case.")
    scope: Scope = Field(default=Scope.GLOBAL, description="global: broadest opt-out; list: one list/group.")
    connections: list[ConnectionName] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Connection names to deliver to. Absent or null: every configured connection.",
    )
    targets: dict[ConnectionName, ConnectionTarget] = Field(
        default_factory=dict, description="Per-connection lists, groups and identifiers."
    )
    customer_key: CustomerKey | None = Field(
        default=None, description="WhatCounts Customer Key, for realms that require one."
    )
    reason: str | None = Field(
        default=None,
        max_length=MAX_REASON_LENGTH,
        description="Why the person opted out. Cut to each provider's limit (Constant Contact: 255).",
    )
    source: Source = Field(
        default=Source.CONTACT, description="Who initiated it: Contact, Account or System."
    )
    requested_at: AwareDatetime = Field(
        default_factory=_now, description="When the person asked (ISO 8601 with a time zone)."
    )

    @field_validator("connections")
    @classmethod
    def _unique_connections(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("connection names must be unique")
        return value

    @field_validator("reason")
    @classmethod
    def _blank_reason_is_none(cls, value: str | None) -> str | None:
        return value or None

    @model_validator(mode="after")
    def _targets_within_connections(self) -> UnsubscribeRequest:
        if self.connections is not None:
            stray = sorted(set(self.targets) - set(self.connections))
            if stray:
                raise ValueError(f"targets name connections not in 'connections': {', '.join(stray)}")
        return self

    def target_for(self, connection: str) -> ConnectionTarget:
        """The target for one connection (empty when the request names none)."""
        return self.targets.get(connection) or _EMPTY_TARGET

    def customer_key_for(self, connection: str) -> str | None:
        """The Customer Key for one connection: its target's, else the request's."""
        return self.target_for(connection).customer_key or self.customer_key


_EMPTY_TARGET: Final = ConnectionTarget()


def describe_errors(exc: ValidationError) -> list[str]:
    """One ``"field: message"`` line per problem, never echoing the input (it may hold an address)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "message"
        problems.append(f"{where}: {error['msg']}")
    return problems


def parse_request(data: Mapping[str, Any] | str | bytes) -> UnsubscribeRequest:
    """Validate one message (a mapping or JSON text) against contract v1.

    Raises:
        InvalidRequestError: naming every bad field.
    """
    try:
        if isinstance(data, str | bytes):
            return UnsubscribeRequest.model_validate_json(data)
        if not isinstance(data, Mapping):
            raise InvalidRequestError([f"message: expected a JSON object, got {type(data).__name__}"])
        return UnsubscribeRequest.model_validate(data)
    except ValidationError as exc:
        raise InvalidRequestError(describe_errors(exc)) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of contract v1, as committed in ``producer/schema``."""
    schema = UnsubscribeRequest.model_json_schema(mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_text() -> str:
    """The committed schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - regeneration helper
    sys.stdout.write(json_schema_text())

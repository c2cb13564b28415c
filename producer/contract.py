"""Message contract v1: the unsubscribe request an upstream service publishes.

The pydantic model below is the source of truth. ``producer/schema/unsubscribe-request.v1.json``
is generated from it (``python -m producer.contract > producer/schema/unsubscribe-request.v1.json``)
and a test fails when the two drift. ``docs/message-contract.md`` explains every field.

The model is strict: no lax coercion (``"yes"`` is not a boolean, ``1.0`` not the version), no
trimming, no control character in any text, and no scope that the targets contradict. It accepts
exactly what the schema accepts (``tests/producer/test_contract_differential.py``), except three
rules JSON Schema cannot express, listed in the schema's ``$comment`` (``_BEYOND_SCHEMA``).
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from producer.errors import InvalidRequestError
from producer.fields import (
    CONNECTION_NAME as CONNECTION_NAME,
)
from producer.fields import (
    CONTROL_CHARACTERS as CONTROL_CHARACTERS,
)
from producer.fields import (
    CUSTOMER_KEY as CUSTOMER_KEY,
)
from producer.fields import (
    DOMAIN_MEMORY as DOMAIN_MEMORY,
)
from producer.fields import (
    LIST_ID as LIST_ID,
)
from producer.fields import (
    MAX_CONNECTIONS as MAX_CONNECTIONS,
)
from producer.fields import (
    MAX_EMAIL_LENGTH as MAX_EMAIL_LENGTH,
)
from producer.fields import (
    MAX_REASON_LENGTH as MAX_REASON_LENGTH,
)
from producer.fields import (
    RFC3339 as RFC3339,
)
from producer.fields import (
    TRIMMED as TRIMMED,
)
from producer.fields import (
    ConnectionName as ConnectionName,
)
from producer.fields import (
    ContactId as ContactId,
)
from producer.fields import (
    CustomerKey as CustomerKey,
)
from producer.fields import (
    Email as Email,
)
from producer.fields import (
    GroupName as GroupName,
)
from producer.fields import (
    ListId as ListId,
)
from producer.fields import (
    ReasonText as ReasonText,
)
from producer.fields import (
    RequestedAt as RequestedAt,
)
from producer.fields import (
    RequestId as RequestId,
)
from producer.fields import (
    Scope as Scope,
)
from producer.fields import (
    Source as Source,
)
from producer.fields import (
    canonical_email as canonical_email,
)
from producer.fields import (
    exact_one,
    text_schema,
)
from producer.fields import (
    normalize_email as normalize_email,
)
from producer.strictjson import decode_json

CONTRACT_VERSION: Final = 1
SCHEMA_ID: Final = "https://unsub-relay.invalid/schema/unsubscribe-request.v1.json"


def new_request_id() -> str:
    """A fresh idempotency key, used when the publisher gives none."""
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class ConnectionTarget(BaseModel):
    """What to unsubscribe from on one connection, and the identifiers that connection needs."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    list_ids: list[ListId] = Field(
        default_factory=list,
        max_length=50,
        description="WhatCounts list ids for scope=list (one delivery per list).",
        json_schema_extra={"uniqueItems": True},
    )
    group: GroupName | None = Field(default=None, description="Insider unsubscribe group for scope=list.")
    all_accounts: bool = Field(
        default=False,
        description="Constant Contact partner: unsubscribe from every client account of the partner "
        "(global_unsubscribe). Scope global only.",
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
    def _unique_lists(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("list ids must be unique")
        return value


class UnsubscribeRequest(BaseModel):
    """One person's opt-out, to be carried to one or more provider connections."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        title="UnsubscribeRequest",
        json_schema_extra={"$id": SCHEMA_ID},
    )

    version: Annotated[Literal[1], BeforeValidator(exact_one)] = Field(
        default=1, description="Contract version: the integer 1."
    )
    request_id: RequestId = Field(
        default_factory=new_request_id,
        description="Idempotency key: a request id seen before is not delivered again. Generated if absent.",
    )
    email: Email = Field(description="The address that opted out. Validated and normalised to lower case.")
    scope: Scope = Field(
        default=Scope.GLOBAL, strict=False, description="global: broadest opt-out; list: one list/group."
    )
    connections: list[ConnectionName] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CONNECTIONS,
        description="Connection names to deliver to. Absent or null: every configured connection.",
        json_schema_extra={"uniqueItems": True},
    )
    targets: dict[ConnectionName, ConnectionTarget] = Field(
        default_factory=dict,
        max_length=MAX_CONNECTIONS,
        description="Per-connection lists, groups and identifiers.",
    )
    customer_key: CustomerKey | None = Field(
        default=None, description="WhatCounts Customer Key, for realms that require one."
    )
    reason: ReasonText | None = Field(
        default=None,
        description="Why the person opted out. Cut to each provider's limit (Constant Contact: 255).",
    )
    source: Source = Field(
        default=Source.CONTACT, strict=False, description="Who initiated it: Contact, Account or System."
    )
    requested_at: RequestedAt = Field(
        default_factory=_now,
        strict=False,
        description="When the person asked (RFC 3339 date-time with a time zone).",
        json_schema_extra=text_schema(pattern=RFC3339),
    )

    @field_validator("connections")
    @classmethod
    def _unique_connections(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("connection names must be unique")
        return value

    @field_validator("targets")
    @classmethod
    def _targets_fit(
        cls, value: dict[str, ConnectionTarget], info: ValidationInfo
    ) -> dict[str, ConnectionTarget]:
        connections = info.data.get("connections")
        for name, target in value.items():
            if connections is not None and name not in connections:
                raise _conflict(name, "names a connection not in 'connections'")
            _check_scope(name, target, info.data.get("scope"))
        return value

    @field_validator("reason")
    @classmethod
    def _blank_reason_is_none(cls, value: str | None) -> str | None:
        return value or None

    def target_for(self, connection: str) -> ConnectionTarget:
        """The target for one connection (empty when the request names none)."""
        return self.targets.get(connection) or _EMPTY_TARGET

    def customer_key_for(self, connection: str) -> str | None:
        """The Customer Key for one connection: its target's, else the request's."""
        return self.target_for(connection).customer_key or self.customer_key


_EMPTY_TARGET: Final = ConnectionTarget()
#: Error type whose context names the offending field below the validated one (``at``).
_CONFLICT: Final = "contract_conflict"


def _conflict(at: str, message: str) -> PydanticCustomError:
    return PydanticCustomError(_CONFLICT, message, {"at": at})


def _check_scope(name: str, target: ConnectionTarget, scope: Scope | None) -> None:
    """No widening: a global request naming lists or groups, or a list one asking for every account."""
    if scope is Scope.GLOBAL and target.list_ids:
        raise _conflict(f"{name}.list_ids", "names lists but scope is global (every list): set scope to list")
    if scope is Scope.GLOBAL and target.group is not None:
        raise _conflict(f"{name}.group", "names a group but scope is global (every group): set scope to list")
    if scope is Scope.LIST and target.all_accounts:
        raise _conflict(f"{name}.all_accounts", "unsubscribes from every account, wider than scope list")


#: What scope allows in targets, as JSON Schema says it (the model checks it in ``_targets_fit``).
_SCOPE_RULES: Final = {
    "if": {"required": ["scope"], "properties": {"scope": {"const": Scope.LIST.value}}},
    "then": {
        "properties": {
            "targets": {"additionalProperties": {"properties": {"all_accounts": {"const": False}}}}
        }
    },
    "else": {
        "properties": {
            "targets": {
                "additionalProperties": {
                    "properties": {"list_ids": {"maxItems": 0}, "group": {"type": "null"}}
                }
            }
        }
    },
}
#: What the worker refuses although JSON Schema cannot say it.
_BEYOND_SCHEMA: Final = (
    "Also refused, beyond what JSON Schema can express: duplicate keys in any object, version 1.0 "
    "(JSON Schema counts it equal to 1), and targets keys not listed in 'connections' when it is given."
)


def describe_errors(exc: ValidationError) -> list[str]:
    """One ``"field: message"`` line per problem, never echoing the input (it may hold an address)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "message"
        if error["type"] == _CONFLICT:
            where = f"{where}.{error.get('ctx', {})['at']}"
        problems.append(f"{where}: {error['msg']}")
    return problems


#: JSON's name for each type ``decode_json`` returns.
_JSON_TYPES: Final = {list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


def parse_request(data: Mapping[str, Any] | str | bytes) -> UnsubscribeRequest:
    """Validate one message (a mapping from :func:`decode_json`, or JSON text) against contract v1.

    JSON text is decoded by :func:`producer.strictjson.decode_json`, so duplicate keys, NaN and
    the rest are refused at every door.

    Raises:
        InvalidRequestError: naming every bad field.
    """
    if isinstance(data, str | bytes):
        data = decode_json(data)
    if not isinstance(data, Mapping):
        kind = _JSON_TYPES.get(type(data), "null" if data is None else type(data).__name__)
        raise InvalidRequestError([f"message: expected a JSON object, got {kind}"])
    try:
        return UnsubscribeRequest.model_validate(data if isinstance(data, dict) else dict(data))
    except ValidationError as exc:
        raise InvalidRequestError(describe_errors(exc)) from None


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of contract v1, as committed in ``producer/schema``."""
    schema = UnsubscribeRequest.model_json_schema(mode="validation")
    targets = schema["properties"]["targets"]
    # Keys are connection names (pydantic says so with patternProperties, which lets others through).
    targets["propertyNames"] = {"pattern": CONNECTION_NAME, **text_schema()}
    targets["additionalProperties"] = targets.pop("patternProperties").popitem()[1]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, **_SCOPE_RULES,
            "$comment": _BEYOND_SCHEMA}  # fmt: skip


def json_schema_text() -> str:
    """The committed schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - regeneration helper
    sys.stdout.write(json_schema_text())

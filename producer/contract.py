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

import functools
import importlib
import json
import re
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
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import PydanticCustomError

from producer.errors import InvalidRequestError
from producer.strictjson import decode_json

CONTRACT_VERSION: Final = 1
SCHEMA_ID: Final = "https://unsub-relay.invalid/schema/unsubscribe-request.v1.json"

#: Longest address SMTP allows (RFC 5321 path limit less the angle brackets).
MAX_EMAIL_LENGTH: Final = 254
#: Longest free-text reason we accept; adapters cut it to each provider's own limit.
MAX_REASON_LENGTH: Final = 1000
#: Most connections one request names (and most targets it carries).
MAX_CONNECTIONS: Final = 100

#: C0 control characters and DEL: refused in every text field (a CR/LF group name once became a
#: group at the provider). The schema says it as ``"not": {"pattern": ...}`` on each string.
CONTROL_CHARACTERS: Final = r"[\x00-\x1f\x7f]"
#: What may not open or close a trimmed value: controls, space and the other Unicode White_Space
#: characters (exactly what ``str.strip()`` removes, less the controls refused anyway).
_EDGE: Final = r"\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
#: A value that neither starts nor ends with whitespace.
TRIMMED: Final = rf"^[^{_EDGE}](?:[\s\S]*[^{_EDGE}])?$"
#: A WhatCounts Customer Key: trimmed, and without '^' or ',' (api_web's record and field separators).
CUSTOMER_KEY: Final = rf"^[^{_EDGE}\^,](?:[^\^,]*[^{_EDGE}\^,])?$"
#: A canonical WhatCounts list id: a positive integer without leading zeros (a provider reading
#: "00" as 0 would opt the address out of every list).
LIST_ID: Final = r"^[1-9][0-9]{0,17}$"
CONNECTION_NAME: Final = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: RFC 3339 date-time with a time zone (``T`` and ``Z`` in capitals, years 1000-9999, whole
#: seconds 00-59, at most 6 fraction digits). Numbers, epochs and other ISO 8601 forms are refused.
RFC3339: Final = (
    r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_CONTROL: Final = re.compile(CONTROL_CHARACTERS)
_RFC3339: Final = re.compile(RFC3339)


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
    """An address as typed by an operator (trimmed), validated and in canonical form: for lookups."""
    return canonical_email(value.strip())


def _remember_domains() -> None:
    """Make email-validator remember the domains it has judged (exactly the same answers).

    Its domain check (IDNA, UTS 46, special-use names) is three fifths of its cost, about 45 µs an
    address, and takes only the domain; a stream of opt-outs repeats few domains. A pure function,
    so remembering its answers for the most recent :data:`DOMAIN_MEMORY` domains changes nothing but
    the time (a refused domain is not remembered: it raises).
    """
    module = importlib.import_module("email_validator.validate_email")
    check = module.validate_email_domain_name
    if not hasattr(check, "cache_info"):
        setattr(module, "validate_email_domain_name", functools.lru_cache(maxsize=DOMAIN_MEMORY)(check))  # noqa: B010


#: Distinct email domains whose validation email-validator remembers (see ``_remember_domains``).
DOMAIN_MEMORY: Final = 4096
_remember_domains()


def canonical_email(value: str) -> str:
    """The contract's check: email-validator syntax (no DNS, no display name), lower-cased, not trimmed."""
    try:
        checked = validate_email(value, check_deliverability=False, allow_display_name=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address ({exc})") from None
    return checked.normalized.lower()


def _no_control(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (U+0000-U+001F, U+007F)")
    return value


def _trimmed(value: str) -> str:
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    return value


def _no_separator(value: str) -> str:
    if "^" in value or "," in value:
        raise ValueError("must not contain '^' or ',' (WhatCounts separators)")
    return value


def _exact_one(value: Any) -> Any:
    # Literal[1] alone takes True and 1.0, which equal 1.
    if type(value) is not int:
        raise ValueError("must be the integer 1")
    return value


def _rfc3339_text(value: Any) -> Any:
    if isinstance(value, datetime):  # a Python caller's own object: the model's own type
        return value
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time string with a time zone, e.g. 2026-11-22T09:15:00Z")
    return value


def _text_schema(**keywords: Any) -> dict[str, Any]:
    """Schema keywords of a text field: ``keywords`` and no control character anywhere."""
    return {**keywords, "not": {"pattern": CONTROL_CHARACTERS}}


Email = Annotated[
    str,
    Field(min_length=3, max_length=MAX_EMAIL_LENGTH, json_schema_extra=_text_schema(format="email")),
    AfterValidator(canonical_email),
]
ConnectionName = Annotated[str, Field(pattern=CONNECTION_NAME, json_schema_extra=_text_schema())]
RequestId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", json_schema_extra=_text_schema())
]
ListId = Annotated[str, Field(pattern=LIST_ID, json_schema_extra=_text_schema())]
CustomerKey = Annotated[
    str,
    Field(min_length=1, max_length=255, json_schema_extra=_text_schema(pattern=CUSTOMER_KEY)),
    AfterValidator(_no_control),
    AfterValidator(_trimmed),
    AfterValidator(_no_separator),
]
ContactId = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$", json_schema_extra=_text_schema())]
GroupName = Annotated[
    str,
    Field(min_length=3, max_length=29, json_schema_extra=_text_schema(pattern=TRIMMED)),
    AfterValidator(_no_control),
    AfterValidator(_trimmed),
]
ReasonText = Annotated[
    str, Field(max_length=MAX_REASON_LENGTH, json_schema_extra=_text_schema()), AfterValidator(_no_control)
]
RequestedAt = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]


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

    version: Annotated[Literal[1], BeforeValidator(_exact_one)] = Field(
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
        json_schema_extra=_text_schema(pattern=RFC3339),
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
    targets["propertyNames"] = {"pattern": CONNECTION_NAME, **_text_schema()}
    targets["additionalProperties"] = targets.pop("patternProperties").popitem()[1]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, **_SCOPE_RULES,
            "$comment": _BEYOND_SCHEMA}  # fmt: skip


def json_schema_text() -> str:
    """The committed schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - regeneration helper
    sys.stdout.write(json_schema_text())

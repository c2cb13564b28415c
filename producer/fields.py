"""The contract's field types: what each text, address, id and date of a request may be.

Each is a pydantic annotated type that also carries its JSON Schema (patterns, lengths, formats),
so the committed schema and the model cannot disagree. :mod:`producer.contract` builds the request
models from them.
"""

from __future__ import annotations

import functools
import importlib
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

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


def exact_one(value: Any) -> Any:
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


def text_schema(**keywords: Any) -> dict[str, Any]:
    """Schema keywords of a text field: ``keywords`` and no control character anywhere."""
    return {**keywords, "not": {"pattern": CONTROL_CHARACTERS}}


Email = Annotated[
    str,
    Field(min_length=3, max_length=MAX_EMAIL_LENGTH, json_schema_extra=text_schema(format="email")),
    AfterValidator(canonical_email),
]
ConnectionName = Annotated[str, Field(pattern=CONNECTION_NAME, json_schema_extra=text_schema())]
RequestId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$", json_schema_extra=text_schema())
]
ListId = Annotated[str, Field(pattern=LIST_ID, json_schema_extra=text_schema())]
CustomerKey = Annotated[
    str,
    Field(min_length=1, max_length=255, json_schema_extra=text_schema(pattern=CUSTOMER_KEY)),
    AfterValidator(_no_control),
    AfterValidator(_trimmed),
    AfterValidator(_no_separator),
]
ContactId = Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{1,64}$", json_schema_extra=text_schema())]
GroupName = Annotated[
    str,
    Field(min_length=3, max_length=29, json_schema_extra=text_schema(pattern=TRIMMED)),
    AfterValidator(_no_control),
    AfterValidator(_trimmed),
]
ReasonText = Annotated[
    str, Field(max_length=MAX_REASON_LENGTH, json_schema_extra=text_schema()), AfterValidator(_no_control)
]
RequestedAt = Annotated[AwareDatetime, BeforeValidator(_rfc3339_text)]

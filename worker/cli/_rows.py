"""From a flat row (CSV columns, a JSONL object or CLI options) to a contract v1 request.

Flat rows name lists and groups without saying which connection they belong to, so ``list_ids``
and ``group`` become a target on each of the row's connections (its ``connections``, else
``--connection``, else every enabled configured connection). Providers ignore what they do not
use: WhatCounts reads ``list_ids``, Insider reads ``group``. A row that names lists or a group and
has no scope (neither its own nor ``--scope``) becomes ``scope: list``; one that says ``global``
and names lists is refused by the contract, never widened. Flat cells are trimmed; nested values
(``targets``) are taken as written. When a configuration with connections is loaded, a row naming
a connection it does not have is refused here rather than dead-lettered later.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from producer.contract import Scope, UnsubscribeRequest, parse_request
from producer.errors import InvalidRequestError

if TYPE_CHECKING:
    from worker.settings import Settings

#: Separator of several values in one CSV cell (connections, list ids).
LIST_SEPARATOR: Final = ";"
#: Flat columns, by the name the contract (or this module) uses.
COLUMNS: Final = frozenset(
    {"email", "request_id", "scope", "connections", "list_ids", "group", "reason", "source",
     "customer_key", "requested_at"}
)  # fmt: skip
#: Other spellings accepted in a header or a JSONL object.
ALIASES: Final = {"connection": "connections", "list_id": "list_ids", "list": "list_ids"}
#: Namespace of the deterministic request ids given to imported rows that carry none.
IMPORT_ID_NAMESPACE: Final = uuid.UUID("6f0c3d7e-2b1a-5c9e-8d4f-0a7b6c5d4e3f")


@dataclass(frozen=True)
class RowDefaults:
    """What a row gets when it leaves a field out (``--scope``, ``--connection``, ...)."""

    scope: Scope | None = None
    connections: tuple[str, ...] = ()
    reason: str | None = None
    source: str | None = None
    #: Enabled connections from the settings: where lists and groups go when nothing else is named.
    configured: tuple[str, ...] = ()
    #: Every connection name the settings have; None when no connection is configured (no check).
    known: frozenset[str] | None = None


def known_connections(settings: Settings) -> frozenset[str] | None:
    """The configured connection names, or None when the configuration has none (nothing to check)."""
    return frozenset(c.name for c in settings.connections) or None


def unknown_connections(names: Iterable[str], known: frozenset[str] | None) -> list[str]:
    """The names the configuration does not have (none when there is no configuration to ask)."""
    return [] if known is None else sorted(set(names) - known)


def canonical_column(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


def import_request_id(seed: str, line: int, email: str) -> str:
    """Same file (seed), line and address → same id, so importing a file twice delivers once."""
    return f"import-{uuid.uuid5(IMPORT_ID_NAMESPACE, f'{seed}:{line}:{email.strip().lower()}')}"


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _trim(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(LIST_SEPARATOR) if part.strip()]
    return value


def _flat_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    fields = {canonical_column(k): _trim(v) for k, v in row.items() if not _blank(v)}
    for key in ("connections", "list_ids"):
        if key in fields:
            fields[key] = _split(fields[key])
    return fields


def _apply_defaults(fields: dict[str, Any], defaults: RowDefaults) -> None:
    if defaults.connections and "connections" not in fields:
        fields["connections"] = list(defaults.connections)
    for key in ("reason", "source"):
        value = getattr(defaults, key)
        if value is not None and key not in fields:
            fields[key] = value
    if "scope" not in fields and defaults.scope is not None:
        fields["scope"] = defaults.scope.value
    if "scope" not in fields and ("list_ids" in fields or "group" in fields):
        fields["scope"] = Scope.LIST.value


def _move_to_targets(fields: dict[str, Any], defaults: RowDefaults) -> None:
    spec = {key: fields.pop(key) for key in ("list_ids", "group") if key in fields}
    if not spec:
        return
    names = fields.get("connections") or list(defaults.configured)
    if not isinstance(names, list) or not names:
        raise InvalidRequestError(
            [f"{'/'.join(spec)}: name the connections it applies to (a 'connections' column or --connection)"]
        )
    targets = dict(fields.get("targets") or {})
    for name in names:
        targets[str(name)] = {**targets.get(str(name), {}), **spec}
    fields["targets"] = targets


def row_to_request(
    row: Mapping[str, Any], defaults: RowDefaults, *, request_id: str | None = None
) -> UnsubscribeRequest:
    """Validate one flat row; ``request_id`` is used when the row has none.

    Raises:
        InvalidRequestError: naming each bad field (never echoing values).
    """
    fields = _flat_fields(row)
    _apply_defaults(fields, defaults)
    _move_to_targets(fields, defaults)
    if request_id is not None and "request_id" not in fields:
        fields["request_id"] = request_id
    request = parse_request(fields)
    unknown = unknown_connections([*(request.connections or ()), *request.targets], defaults.known)
    if unknown:
        raise InvalidRequestError([f"connections: not in the configuration: {', '.join(unknown)}"])
    return request

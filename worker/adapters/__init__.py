"""Provider adapters: one module per provider operation, one registry by provider type.

``build_adapter(conn, deps)`` returns the adapter for a connection; build one per connection per
process and ``close()`` it when done (it owns a pooled HTTP client). A new provider is one new
module implementing :class:`~worker.adapters.base.Adapter` and one line in :data:`ADAPTERS`.
``refresh_if_due(conn, deps)`` renews a token-using connection's token ahead of its expiry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from worker.adapters.base import (
    Adapter,
    AdapterDeps,
    CallGate,
    CallObserver,
    NullObserver,
    OpenGate,
    Outcome,
    OutcomeKind,
)
from worker.adapters.cc_contacts import CcContactsAdapter
from worker.adapters.cc_partner import CcPartnerAdapter
from worker.adapters.easytools import EasyToolsAdapter
from worker.adapters.insider import InsiderAdapter
from worker.adapters.token_endpoints import refresh_if_due
from worker.adapters.whatcounts import WhatCountsAdapter
from worker.settings import Connection, ProviderType

AdapterClass = Callable[[Any, AdapterDeps], Adapter]

#: The adapter of each provider type.
ADAPTERS: Final[Mapping[ProviderType, AdapterClass]] = MappingProxyType(
    {
        ProviderType.CC_PARTNER: CcPartnerAdapter,
        ProviderType.CC_CONTACTS: CcContactsAdapter,
        ProviderType.WHATCOUNTS: WhatCountsAdapter,
        ProviderType.INSIDER: InsiderAdapter,
        ProviderType.EASYTOOLS: EasyToolsAdapter,
    }
)


def build_adapter(conn: Connection, deps: AdapterDeps) -> Adapter:
    """The adapter for ``conn``'s provider type."""
    return ADAPTERS[conn.type](conn, deps)


__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterDeps",
    "CallGate",
    "CallObserver",
    "CcContactsAdapter",
    "CcPartnerAdapter",
    "EasyToolsAdapter",
    "InsiderAdapter",
    "NullObserver",
    "OpenGate",
    "Outcome",
    "OutcomeKind",
    "WhatCountsAdapter",
    "build_adapter",
    "refresh_if_due",
]

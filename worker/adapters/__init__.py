"""Provider adapters: one module per provider operation.

Each provider module defines its connection model, its adapter, its target planning and its
``PROVIDER`` registration (:mod:`worker.providers`, which also builds a connection's adapter:
``providers.build_adapter(conn, deps)``). Build one adapter per connection per process and
``close()`` it when done (it owns a pooled HTTP client).
"""

from __future__ import annotations

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

__all__ = [
    "Adapter",
    "AdapterDeps",
    "CallGate",
    "CallObserver",
    "NullObserver",
    "OpenGate",
    "Outcome",
    "OutcomeKind",
]

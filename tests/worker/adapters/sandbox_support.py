"""Running the real adapters against the local provider sandbox, as the delivery pipeline does.

:func:`adapter_for` builds the adapter of one of ``sandbox.connections()`` (worker/examples/sandbox.yaml
pointed at the test server); :func:`deliver` runs records through it the way a delivery task does:
precheck first, then calls of records sharing a batch key, at most ``max_batch_size`` a call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from pydantic import TypeAdapter

from tests.support.sandbox_fixtures import SandboxClient
from tests.worker.adapters.conftest import make_record
from worker.adapters import Adapter, AdapterDeps, Outcome
from worker.providers import build_adapter
from worker.records import DeliveryRecord
from worker.settings import Connection

_CONNECTION: TypeAdapter[Connection] = TypeAdapter(Connection)

#: Every credential of worker/examples/sandbox.yaml (and of the sandbox's seed).
SANDBOX_SECRETS = (
    "sandbox-partner-secret",
    "sandbox-api-key",
    "sandbox-contacts-secret",
    "sandbox-refresh-0",
    "sandbox-pass",
    "ck-pass",
    "sandbox-insider-token",
    "sandbox-easy-token",
)


def connection(sandbox: SandboxClient, name: str, **overrides: Any) -> Connection:
    """The connection ``name`` of sandbox.yaml at this sandbox, with ``overrides``."""
    data = next(c for c in sandbox.connections() if c["name"] == name)
    return _CONNECTION.validate_python({**data, **overrides})


def connection_data(sandbox: SandboxClient, name: str, **overrides: Any) -> dict[str, Any]:
    """The same connection as plain data (to hand to another process)."""
    data = next(c for c in sandbox.connections() if c["name"] == name)
    return {**data, **overrides}


def connection_from(data: dict[str, Any]) -> Connection:
    return _CONNECTION.validate_python(data)


@contextmanager
def adapter_for(sandbox: SandboxClient, name: str, deps: AdapterDeps, **overrides: Any) -> Iterator[Adapter]:
    adapter = build_adapter(connection(sandbox, name, **overrides), deps)
    try:
        yield adapter
    finally:
        adapter.close()


def record(email: str, target: str = "account", **fields: Any) -> DeliveryRecord:
    return make_record(email, target, **fields)


def deliver(adapter: Adapter, records: Sequence[DeliveryRecord]) -> list[Outcome]:
    """One outcome per record, in order: prechecks, then batched calls as the pipeline makes them."""
    outcomes: dict[int, Outcome] = {}
    batches: dict[Any, list[int]] = {}
    for index, item in enumerate(records):
        decided = adapter.precheck(item)
        if decided is not None:
            outcomes[index] = decided
        else:
            batches.setdefault(adapter.batch_key(item), []).append(index)
    size = adapter.max_batch_size
    for indexes in batches.values():
        for start in range(0, len(indexes), size):
            chunk = indexes[start : start + size]
            results = adapter.deliver([records[i] for i in chunk])
            assert len(results) == len(chunk), "an adapter must give one outcome per record"
            outcomes.update(zip(chunk, results, strict=True))
    return [outcomes[i] for i in range(len(records))]


def emails_of(events: list[dict[str, Any]]) -> list[str]:
    return [e["email"] for e in events]

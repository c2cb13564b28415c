"""Every provider the system delivers to, registered in one place.

A provider is one module that defines ``PROVIDER``, a :class:`Provider`: its type name, its
connection model (what the settings accept for it), its adapter, how a request's scope becomes its
targets and, for a provider whose tokens expire, how to fetch one. :data:`PROVIDER_MODULES` lists
those modules, one line each. Everything else derives from it: the settings' connection types, the
delivery queues Celery declares and workers consume, which adapter a connection gets, target
planning, token refreshes. Adding a provider is one new module and one line here (a test builds one
to prove it: ``tests/worker/test_providers.py``).
"""

from __future__ import annotations

import builtins
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from producer import names

if TYPE_CHECKING:
    import httpx

    from producer.contract import UnsubscribeRequest
    from worker.adapters.auth import Fetch
    from worker.adapters.base import Adapter, AdapterDeps
    from worker.connection import ConnectionBase

#: The provider modules, one line each; each defines ``PROVIDER``.
PROVIDER_MODULES: Final = (
    "worker.adapters.cc_partner",
    "worker.adapters.cc_contacts",
    "worker.adapters.whatcounts",
    "worker.adapters.insider",
    "worker.adapters.easytools",
)


def _no_token_limit(_: Any) -> str | None:
    return None


@dataclass(frozen=True)
class Provider:
    """One provider operation, everything the pipeline needs of it."""

    #: The ``type`` of its connections, the name of its delivery queue (``unsub.deliver.<type>``).
    type: str
    #: Its connection model: a ``ConnectionBase`` subclass whose ``type`` is ``Literal[<type>]``.
    connection: builtins.type[ConnectionBase]
    #: Builds its adapter for one connection: ``adapter(conn, deps)``.
    adapter: Callable[[Any, AdapterDeps], Adapter]
    #: The targets of one request on one connection (``worker.records.make_target``); an empty list
    #: means the request names no list or group the provider could honour (it is dead-lettered
    #: ``no_list_target``, never widened).
    targets: Callable[[UnsubscribeRequest, Any], list[str]]
    #: How to fetch a fresh access token for a connection (``None``: its credentials do not expire).
    token_fetch: Callable[[Any, httpx.Client, AdapterDeps], Fetch] | None = None
    #: The rate limit of its token endpoint for a connection (``limits`` notation), if any.
    token_rate_limit: Callable[[Any], str | None] = _no_token_limit

    @property
    def queue(self) -> str:
        return names.delivery_queue(self.type)


_registry: dict[str, Provider] = {}
_listeners: list[Callable[[], None]] = []


def _load() -> dict[str, Provider]:
    if not _registry:
        for module in PROVIDER_MODULES:
            found: Provider = importlib.import_module(module).PROVIDER
            _registry[found.type] = found
    return _registry


def all_providers() -> list[Provider]:
    """Every registered provider, in registration order."""
    return list(_load().values())


def provider(provider_type: str) -> Provider:
    """The provider of a connection type (``KeyError`` for a type nobody registered)."""
    return _load()[provider_type]


def types() -> list[str]:
    return list(_load())


def register(added: Provider) -> None:
    """Add a provider at run time (a plugin, or a test's): the settings learn its connections."""
    _load()[added.type] = added
    for listener in _listeners:
        listener()


def unregister(provider_type: str) -> None:
    _load().pop(provider_type, None)
    for listener in _listeners:
        listener()


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever a provider is registered or removed (the settings rebuild)."""
    _listeners.append(listener)


def delivery_queues() -> list[str]:
    """One Celery queue per provider type."""
    return [p.queue for p in all_providers()]


def celery_queues() -> list[str]:
    """The queues Celery's consumers read: control, then one per provider type."""
    return [names.CONTROL_QUEUE, *delivery_queues()]


def declared_queues() -> list[str]:
    """Every queue the Celery app declares (the intake queue too: tasks may be sent to it)."""
    return [names.INTAKE_QUEUE, *celery_queues()]


def connection_models() -> Iterator[type[ConnectionBase]]:
    return (p.connection for p in all_providers())


def build_adapter(conn: Any, deps: AdapterDeps) -> Adapter:
    """The adapter for ``conn``, as its provider builds it."""
    return provider(conn.type).adapter(conn, deps)

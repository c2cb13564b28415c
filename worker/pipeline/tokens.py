"""Keeping access tokens fresh: what the scheduler's periodic ``unsub.refresh_token`` task does.

Every :data:`worker.scheduler.TOKEN_REFRESH_EVERY_S` the scheduler queues one refresh per Constant
Contact connection. :func:`refresh_connection_token` renews the connection's shared token when it
is within ``token_refresh_margin_s`` of its expiry (or missing), so deliveries rarely meet an
expired one. Renewal goes through the same Redis lock and token gate as the adapters, so a refresh
task and a delivery that need a token at the same moment still make one token request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from worker.adapters.token_endpoints import refresh_if_due
from worker.errors import AuthenticationError, ProviderError
from worker.logs import get_logger
from worker.providers import provider
from worker.reasons import DeadReason
from worker.settings import Connection

if TYPE_CHECKING:
    from worker.pipeline.runtime import Runtime

log = get_logger(__name__)

UNKNOWN_CONNECTION: Final = DeadReason.UNKNOWN_CONNECTION
DISABLED: Final = "disabled"
NO_TOKEN: Final = "no_token"
AUTH_FAILED: Final = DeadReason.AUTH_FAILED
TOKEN_UNAVAILABLE: Final = "token_unavailable"


def refresh_connection_token(rt: Runtime, connection: str) -> dict[str, Any]:
    """Renew ``connection``'s token if it is due; returns what happened (the task's result).

    ``renewed`` is True when this call fetched a new token. ``skipped`` names why nothing was tried;
    ``error`` (``auth_failed`` or ``token_unavailable``) says the endpoint refused or failed.
    Never raises for provider trouble: the next run, or the next delivery, tries again.
    """
    report: dict[str, Any] = {"connection": connection, "renewed": False}
    try:
        conn = rt.settings.connection(connection)
    except KeyError:
        return {**report, "skipped": UNKNOWN_CONNECTION}
    if not conn.enabled:
        return {**report, "skipped": DISABLED}
    fetch = provider(conn.type).token_fetch
    if fetch is None:
        return {**report, "skipped": NO_TOKEN}
    try:
        report["renewed"] = refresh_if_due(conn, rt.deps(conn), fetch)
    except AuthenticationError as exc:
        # Open the breaker now (it logs the one error naming the connection): deliveries would meet
        # the same refusal, so the records wait for a fixed credential instead.
        log.info("the OAuth endpoint refused the credentials of the connection", error=str(exc))
        rt.breaker(conn).trip(AUTH_FAILED)
        report["error"] = AUTH_FAILED
    except ProviderError as exc:
        log.warning("could not renew the access token; the next run tries again", error=str(exc))
        report["error"] = TOKEN_UNAVAILABLE
    finally:
        _flush_observations(rt, conn)
    return report


def _flush_observations(rt: Runtime, conn: Connection) -> None:
    """Count the token request(s) in the connection's stats, as deliveries do."""
    with rt.redis.pipeline(transaction=True) as pipe:
        rt.recorder(conn).flush(pipe, conn.name)
        pipe.execute()

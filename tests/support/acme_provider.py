"""A sixth provider, built the way a new one is: this one module and one registration line.

"Acme" has a batch API (``POST {base_url}/unsubscribe`` with ``{"emails": [...]}``, 100 addresses a
call) and a static bearer token, and only an account-wide opt-out. Registered in a test with
``providers.register(PROVIDER)`` (in production: one line in ``worker.providers.PROVIDER_MODULES``).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Final, Literal

from pydantic import SecretStr

from producer.contract import UnsubscribeRequest
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import STANDARD_CLASSES, TRANSIENT, Verdict, status_table
from worker.adapters.common import HttpAdapter
from worker.adapters.split import Result, deliver_isolating
from worker.connection import ConnectionBase
from worker.providers import Provider
from worker.records import DeliveryRecord, TargetKind, make_target

OPERATION: Final = "unsubscribe"
STATUS_TABLE: Final = status_table(
    {**TRANSIENT, 400: Verdict.REJECTED, 401: Verdict.REAUTH},  # a static token cannot be renewed
    STANDARD_CLASSES,
)


class AcmeConnection(ConnectionBase):
    """Acme: a static API token."""

    type: Literal["acme"]
    token: SecretStr


class AcmeAdapter(HttpAdapter):
    provider = "acme"
    provider_max_batch = 100

    def __init__(self, conn: AcmeConnection, deps: AdapterDeps) -> None:
        token = conn.token.get_secret_value()
        super().__init__(conn, deps, headers={"Authorization": f"Bearer {token}"}, secrets=[token])
        self.url = f"{str(conn.base_url).rstrip('/')}/unsubscribe"

    def batch_key(self, record: DeliveryRecord) -> Hashable:
        return record.target

    def precheck(self, record: DeliveryRecord) -> Outcome | None:
        return None

    def deliver(self, batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        return deliver_isolating(batch, self._attempt)

    def _attempt(self, records: Sequence[DeliveryRecord]) -> Result:
        request = self.client.build_request("POST", self.url, json={"emails": [r.email for r in records]})
        reply = self.caller.send(OPERATION, request)
        if isinstance(reply, Outcome):
            return [reply] * len(records)
        return self.judge(reply, STATUS_TABLE(reply.status), len(records), OPERATION)


def targets(request: UnsubscribeRequest, conn: AcmeConnection) -> list[str]:
    return [make_target(TargetKind.ACCOUNT)]


PROVIDER: Final = Provider(type="acme", connection=AcmeConnection, adapter=AcmeAdapter, targets=targets)

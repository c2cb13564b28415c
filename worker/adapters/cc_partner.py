"""Constant Contact technology partner: bulk unsubscribe under one client account.

``POST {base_url}/partner/accounts/{encoded_account_id}/contacts/unsubscribe`` with ``x-api-key``
and ``Authorization: Bearer <partner JWT>``; body ``email_addresses`` (at most 500),
``update_source``, ``opt_out_reason`` (at most 255 characters), ``delete_contacts`` and
``global_unsubscribe``. A global unsubscribe (target ``all_accounts``: every client account of the
partner) may carry exactly one address, so such records never share a call.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from types import MappingProxyType
from typing import Any, Final, Literal

import httpx
from pydantic import Field, SecretStr, field_validator

from producer.contract import UnsubscribeRequest
from worker.adapters.auth import Fetch
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import STANDARD_CLASSES, TRANSIENT, Verdict, status_table
from worker.adapters.common import REAUTH_MEANINGS as COMMON_REAUTH_MEANINGS
from worker.adapters.common import HttpAdapter, send_with_token, unsupported_target
from worker.adapters.split import Result, deliver_isolating
from worker.adapters.token_endpoints import PARTNER_TOKEN_LIFETIME_S, TokenEndpoint, token_manager
from worker.connection import HOUR_S, ConnectionBase, EndpointUrl, RateLimitText, check_rate_limit
from worker.providers import Provider
from worker.records import DeliveryRecord, TargetKind, make_target


class CcPartnerConnection(ConnectionBase):
    """Constant Contact technology partner: bulk unsubscribe under one client account."""

    type: Literal["cc_partner"]
    api_key: SecretStr
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    #: The Cognito client-credentials endpoint that issues the one-hour partner JWT.
    token_url: EndpointUrl
    encoded_account_id: str = Field(pattern=r"^[A-Za-z0-9]{1,64}$")
    delete_contacts: bool = False
    rate_limit: RateLimitText = "4/second;10000/day"
    token_rate_limit: str = "1/second"

    @field_validator("token_rate_limit")
    @classmethod
    def _valid_token_rate_limit(cls, value: str) -> str:
        check_rate_limit(value)
        return value

    #: Re-authenticate this long before the JWT expires.
    token_refresh_margin_s: float = Field(default=600.0, ge=0, le=HOUR_S)


PARTNER_MAX_ADDRESSES: Final = 500
OPT_OUT_REASON_CHARS: Final = 255
OPERATION: Final = "unsubscribe"

STATUS_TABLE: Final = status_table(
    {
        **TRANSIENT,
        400: Verdict.REJECTED,  # malformed JSON or a data validation error: find the record by splitting
        401: Verdict.RENEW_TOKEN,  # "the access token used is invalid": one fresh JWT, then reauth
        403: Verdict.REAUTH,  # missing scope or privilege, or the application is deactivated
        404: Verdict.REAUTH,  # the client account (encoded_account_id) is unknown: a setting is wrong
        422: Verdict.REJECTED,
    },
    STANDARD_CLASSES,
)

_TARGETS: Final = frozenset({TargetKind.ACCOUNT, TargetKind.ALL_ACCOUNTS})
#: What the statuses that stop the connection mean here (see STATUS_TABLE).
REAUTH_MEANINGS: Final = MappingProxyType(
    {
        **COMMON_REAUTH_MEANINGS,
        # The partner cannot see that client account: the setting is wrong, no record is at fault.
        404: "account not found: check encoded_account_id",
    }
)


def opt_out_reason(record: DeliveryRecord) -> str | None:
    return record.reason[:OPT_OUT_REASON_CHARS] if record.reason else None


class CcPartnerAdapter(HttpAdapter):
    provider = "cc_partner"
    provider_max_batch = PARTNER_MAX_ADDRESSES
    reauth_meanings = REAUTH_MEANINGS

    def __init__(self, conn: CcPartnerConnection, deps: AdapterDeps) -> None:
        api_key = conn.api_key.get_secret_value()
        super().__init__(
            conn,
            deps,
            headers={"x-api-key": api_key, "Accept": "application/json"},
            secrets=[api_key, conn.client_secret.get_secret_value()],
        )
        self.conn = conn
        self.tokens = token_manager(conn, deps, self.client, partner_fetch)
        base = str(conn.base_url).rstrip("/")
        self.url = f"{base}/partner/accounts/{conn.encoded_account_id}/contacts/unsubscribe"

    def batch_key(self, record: DeliveryRecord) -> Hashable:
        everywhere = record.target_kind is TargetKind.ALL_ACCOUNTS
        # A global unsubscribe carries one address: give each its own key so none share a call.
        alone = record.delivery_id if everywhere else None
        return (self.conn.encoded_account_id, record.source.value, opt_out_reason(record), everywhere, alone)

    def precheck(self, record: DeliveryRecord) -> Outcome | None:
        return None if record.target_kind in _TARGETS else unsupported_target(self.provider, record)

    def deliver(self, batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        if batch and batch[0].target_kind is TargetKind.ALL_ACCOUNTS:
            return [outcome for record in batch for outcome in deliver_isolating([record], self._attempt)]
        return deliver_isolating(batch, self._attempt)

    def _attempt(self, records: Sequence[DeliveryRecord]) -> Result:
        body = self._body(records)

        def send(token: str) -> Any:
            request = self.client.build_request(
                "POST", self.url, json=body, headers={"Authorization": f"Bearer {token}"}
            )
            return self.caller.send(OPERATION, request)

        reply = send_with_token(self.provider, self.tokens, STATUS_TABLE, send)
        if isinstance(reply, Outcome):
            return [reply] * len(records)
        return self.judge(reply, STATUS_TABLE(reply.status), len(records), OPERATION)

    def _body(self, records: Sequence[DeliveryRecord]) -> dict[str, Any]:
        first = records[0]
        body: dict[str, Any] = {
            "email_addresses": [r.email for r in records],
            "update_source": first.source.value,
            "delete_contacts": self.conn.delete_contacts,
            "global_unsubscribe": first.target_kind is TargetKind.ALL_ACCOUNTS,
        }
        reason = opt_out_reason(first)
        if reason is not None:
            body["opt_out_reason"] = reason
        return body


def targets(request: UnsubscribeRequest, conn: CcPartnerConnection) -> list[str]:
    """The client account the connection points at; with ``all_accounts``, every account of the partner."""
    spec = request.target_for(conn.name)
    return [make_target(TargetKind.ALL_ACCOUNTS if spec.all_accounts else TargetKind.ACCOUNT)]


def _token_rate_limit(conn: CcPartnerConnection) -> str | None:
    return conn.token_rate_limit


def partner_fetch(conn: CcPartnerConnection, client: httpx.Client, deps: AdapterDeps) -> Fetch:
    endpoint = TokenEndpoint.of(conn, client, deps, default_lifetime_s=PARTNER_TOKEN_LIFETIME_S)
    return lambda: endpoint.post(params={"grant_type": "client_credentials"})


PROVIDER: Final = Provider(
    type="cc_partner",
    connection=CcPartnerConnection,
    adapter=CcPartnerAdapter,
    targets=targets,
    token_fetch=partner_fetch,
    token_rate_limit=_token_rate_limit,
)

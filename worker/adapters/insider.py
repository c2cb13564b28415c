"""Insider email API v2: global or group unsubscribe, at most 500 addresses a request.

``POST {base_url}/email/v2/unsubscribe`` with ``X-PARTNER-NAME`` (lower case) and
``X-REQUEST-TOKEN``. Global: ``{"emails", "uploader_email"}``; group: also ``"group_name"`` and
``"is_unsubscribe_group": true`` (without it Insider would unsubscribe globally). Insider accepts
the upload and processes it later: a 200 means accepted. A group name Insider cannot take (not 3 to
29 characters, a control character, whitespace at either end) is dead before any call.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence
from typing import Any, Final, Literal

from pydantic import EmailStr, Field, SecretStr, field_validator

from producer.contract import CONTROL_CHARACTERS, Scope, UnsubscribeRequest
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import STANDARD_CLASSES, TRANSIENT, Verdict, status_table
from worker.adapters.common import UNSUPPORTED_TARGET, HttpAdapter, unsupported_target
from worker.adapters.http import Reply
from worker.adapters.split import Result, deliver_isolating
from worker.connection import ConnectionBase
from worker.providers import Provider
from worker.records import DeliveryRecord, TargetKind, make_target


class InsiderConnection(ConnectionBase):
    """Insider email API v2: global or group unsubscribe, 500 addresses a request."""

    type: Literal["insider"]
    partner_name: str = Field(min_length=1, max_length=128)
    token: SecretStr
    uploader_email: EmailStr
    default_group: str | None = Field(default=None, min_length=3, max_length=29)

    @field_validator("partner_name")
    @classmethod
    def _lower(cls, value: str) -> str:
        # Insider requires the X-PARTNER-NAME header in lower case.
        return value.lower()


INSIDER_MAX_EMAILS: Final = 500
#: Insider: a group name has "more than two, fewer than 30 characters".
GROUP_NAME_MIN_CHARS: Final = 3
GROUP_NAME_MAX_CHARS: Final = 29
OPERATION: Final = "unsubscribe"

STATUS_TABLE: Final = status_table(
    {
        **TRANSIENT,
        400: Verdict.REJECTED,  # {"statusMessage": "Bad request"}: find the address by splitting
        401: Verdict.REAUTH,  # static token refused: nothing to renew
        403: Verdict.REAUTH,
        404: Verdict.REAUTH,  # wrong base URL
        413: Verdict.REJECTED,
        422: Verdict.REJECTED,
    },
    STANDARD_CLASSES,
)
#: A 400 about the uploader address is the connection's setting, not any record's fault.
_UPLOADER_REFUSED: Final = re.compile(r"uploader", re.IGNORECASE)
_TARGETS: Final = frozenset({TargetKind.GLOBAL, TargetKind.GROUP})
_CONTROL: Final = re.compile(CONTROL_CHARACTERS)


class InsiderAdapter(HttpAdapter):
    provider = "insider"
    provider_max_batch = INSIDER_MAX_EMAILS

    def __init__(self, conn: InsiderConnection, deps: AdapterDeps) -> None:
        token = conn.token.get_secret_value()
        super().__init__(
            conn,
            deps,
            headers={"X-PARTNER-NAME": conn.partner_name.lower(), "X-REQUEST-TOKEN": token},
            secrets=[token],
        )
        self.conn = conn
        self.url = f"{str(conn.base_url).rstrip('/')}/email/v2/unsubscribe"

    def batch_key(self, record: DeliveryRecord) -> Hashable:
        return record.target

    def precheck(self, record: DeliveryRecord) -> Outcome | None:
        if record.target_kind not in _TARGETS:
            return unsupported_target(self.provider, record)
        if record.target_kind is TargetKind.GROUP:
            # Insider refuses the whole call ("Bad request") or creates the odd group, and every
            # record of it shares the group: splitting would only spend calls finding that out.
            return _group_problem(record.target_value or "")
        return None

    def deliver(self, batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        return deliver_isolating(batch, self._attempt)

    def _attempt(self, records: Sequence[DeliveryRecord]) -> Result:
        request = self.client.build_request("POST", self.url, json=self._body(records))
        reply = self.caller.send(OPERATION, request)
        if isinstance(reply, Outcome):
            return [reply] * len(records)
        return self.judge(reply, self._verdict(reply), len(records), OPERATION)

    def _verdict(self, reply: Reply) -> Verdict:
        verdict = STATUS_TABLE(reply.status)
        if verdict is Verdict.REJECTED and _UPLOADER_REFUSED.search(reply.text):
            return Verdict.REAUTH
        return verdict

    def _body(self, records: Sequence[DeliveryRecord]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "emails": [r.email for r in records],
            "uploader_email": self.conn.uploader_email,
        }
        first = records[0]
        if first.target_kind is TargetKind.GROUP:
            body["group_name"] = first.target_value
            body["is_unsubscribe_group"] = True
        return body


def _group_problem(group: str) -> Outcome | None:
    """Why Insider cannot take this group name (the name itself is not echoed), or None."""
    if not GROUP_NAME_MIN_CHARS <= len(group) <= GROUP_NAME_MAX_CHARS:
        message = f"insider group names have {GROUP_NAME_MIN_CHARS} to {GROUP_NAME_MAX_CHARS} characters"
        return Outcome.dead(UNSUPPORTED_TARGET, message)
    if _CONTROL.search(group) or group != group.strip():
        message = "insider group names hold no control character and no whitespace at either end"
        return Outcome.dead(UNSUPPORTED_TARGET, message)
    return None


def targets(request: UnsubscribeRequest, conn: InsiderConnection) -> list[str]:
    """Global: the global unsubscribe. List: the request's group, else the connection's default."""
    if request.scope is Scope.GLOBAL:
        return [make_target(TargetKind.GLOBAL)]
    chosen = request.target_for(conn.name).group or conn.default_group
    return [make_target(TargetKind.GROUP, chosen)] if chosen else []


PROVIDER: Final = Provider(
    type="insider", connection=InsiderConnection, adapter=InsiderAdapter, targets=targets
)

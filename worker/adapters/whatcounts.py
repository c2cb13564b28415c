"""WhatCounts ``api_web``: unsubscribe from one list, or a global opt-out, in caret-joined batches.

``GET {base_url}/bin/api_web?r=<realm>&p=<password>&c=unsub&list_id=<id>[&optout=1]&data=...``
where ``data`` is a header row and one row per record joined by ``^``:
``email^a@x.com^b@x.com`` or, in a Customer Key realm, ``email,customer_key^a@x.com,123^...``.
Global opt-out is ``list_id=0&optout=1``. A list-scoped record is sent only with its own canonical
list id (a positive integer without leading zeros); without one it is dead (``no_list_target``),
never sent as list 0, which would widen it to every list. GET is the documented form, so it is the
default and each request is kept within ``max_url_length`` (a batch that does not fit goes out as
several requests); ``use_post`` sends the same fields as a form body instead. The password
(``p=``) is in every request but never in a log line or an outcome.

The answer is text (see :mod:`worker.adapters.whatcounts_reply`). When it counts failed records
without naming them, the batch is split in halves and sent again until every failing record is
alone (unsubscribing twice is harmless); a lone failing record is dead with the provider's text.
"""

from __future__ import annotations

import re
import string
from collections.abc import Hashable, Sequence
from typing import Final, Literal

import httpx
from pydantic import Field, SecretStr

from producer.contract import Scope, UnsubscribeRequest
from worker.adapters.base import AdapterDeps, Outcome
from worker.adapters.classify import STANDARD_CLASSES, TRANSIENT, Verdict, status_table
from worker.adapters.common import INVALID_EMAIL, REJECTED_BY_PROVIDER, HttpAdapter, unsupported_target
from worker.adapters.http import Reply
from worker.adapters.split import PartlyFailed, Rejected, Result, deliver_isolating
from worker.adapters.whatcounts_reply import ApiWebReply, FailureKind, parse_reply
from worker.connection import ConnectionBase
from worker.providers import Provider
from worker.reasons import DeadReason, RetryCause
from worker.records import DeliveryRecord, TargetKind, make_target


class WhatCountsConnection(ConnectionBase):
    """WhatCounts ``api_web``: realm and password, caret-separated batches."""

    type: Literal["whatcounts"]
    realm: str = Field(min_length=1, max_length=128)
    password: SecretStr
    #: The realm has Customer Key enabled: records without a ``customer_key`` cannot be delivered.
    customer_key_required: bool = False
    #: List used for scope=list requests that name none.
    default_list_id: str | None = Field(default=None, pattern=r"^[1-9][0-9]{0,17}$")
    #: Also write an opt-out record on list unsubscribes (``optout=1``), so the list cannot re-add them.
    list_optout: bool = True
    #: Send records in a form body (POST) rather than the documented query string (GET).
    use_post: bool = False
    #: Longest request URL the adapter builds when ``use_post`` is off.
    max_url_length: int = Field(default=2000, ge=256, le=65536)


OPERATION: Final = "unsubscribe"
MISSING_CUSTOMER_KEY: Final = DeadReason.MISSING_CUSTOMER_KEY
NO_LIST_TARGET: Final = DeadReason.NO_LIST_TARGET
URL_TOO_LONG: Final = DeadReason.URL_TOO_LONG
GLOBAL_LIST_ID: Final = "0"
RECORD_SEPARATOR: Final = "^"
FIELD_SEPARATOR: Final = ","
#: No documented limit of records a call; the REST opt-out report pages at 500.
WHATCOUNTS_MAX_RECORDS: Final = 500
#: Encoded size of a typical data row (``%5E`` + an address + a key), to size batches for GET.
TYPICAL_ROW_CHARS: Final = 48
#: A canonical list id, as the contract and the settings require it.
_LIST_ID: Final = re.compile(r"[1-9][0-9]{0,17}")
#: Longest list id the contract allows: used to size batches whatever the list.
LONGEST_LIST_ID: Final = "9" * 18

#: Query or form fields, in the order the vendor's examples use.
Fields = list[tuple[str, str | int | float | bool | None]]

#: HTTP statuses; a 200 carries the SUCCESS/FAILURE text that decides.
STATUS_TABLE: Final = status_table(
    {
        **TRANSIENT,
        400: Verdict.REJECTED,
        401: Verdict.REAUTH,  # realm and password are static: nothing to renew
        403: Verdict.REAUTH,  # e.g. the caller's IP is not approved
        404: Verdict.REAUTH,  # wrong base URL
        414: Verdict.REJECTED,  # URL too long after all: halves fit
        422: Verdict.REJECTED,
    },
    STANDARD_CLASSES,
)


#: Bytes a query string carries as they are (httpx encodes values with ``urllib.parse.quote_plus``:
#: letters, digits and ``_.-~`` stay, a space becomes ``+``, every other byte becomes ``%XX``).
_AS_IS: Final = (string.ascii_letters + string.digits + "_.-~ ").encode()


def encoded_length(value: str) -> int:
    """Length of ``value`` once encoded in a query string (as httpx encodes it), without building it."""
    raw = value.encode("utf-8")
    return len(raw) + 2 * len(raw.translate(None, _AS_IS))


class WhatCountsAdapter(HttpAdapter):
    provider = "whatcounts"
    provider_max_batch = WHATCOUNTS_MAX_RECORDS

    def __init__(self, conn: WhatCountsConnection, deps: AdapterDeps) -> None:
        self.password = conn.password.get_secret_value()
        super().__init__(conn, deps, headers={"Accept": "text/plain"}, secrets=[self.password])
        self.conn = conn
        self.endpoint = f"{str(conn.base_url).rstrip('/')}/bin/api_web"
        self.header = "email,customer_key" if conn.customer_key_required else "email"
        self._fixed_lengths: dict[str, int] = {}

    @property
    def max_batch_size(self) -> int:
        if self.conn.use_post:
            return super().max_batch_size
        room = self.conn.max_url_length - self._fixed_url_length(LONGEST_LIST_ID)
        return max(1, min(room // TYPICAL_ROW_CHARS, super().max_batch_size))

    def batch_key(self, record: DeliveryRecord) -> Hashable:
        return record.target

    def precheck(self, record: DeliveryRecord) -> Outcome | None:
        if record.target_kind not in (TargetKind.GLOBAL, TargetKind.LIST):
            return unsupported_target(self.provider, record)
        if self._list_id(record) is None:
            return _no_list_id()
        if self.conn.customer_key_required and not record.customer_key:
            return Outcome.dead(
                MISSING_CUSTOMER_KEY, "the realm requires a Customer Key and the request has none"
            )
        for value, what in ((record.email, "address"), (record.customer_key or "", "Customer Key")):
            if RECORD_SEPARATOR in value or FIELD_SEPARATOR in value:
                reason = INVALID_EMAIL if what == "address" else REJECTED_BY_PROVIDER
                return Outcome.dead(
                    reason, f"the {what} contains '^' or ',', which api_web data cannot carry"
                )
        if not self.conn.use_post and self._too_long([record]):
            return Outcome.dead(URL_TOO_LONG, "the record alone exceeds max_url_length; set use_post")
        return None

    def deliver(self, batch: Sequence[DeliveryRecord]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for chunk in self._chunks(batch):
            outcomes += deliver_isolating(chunk, self._attempt)
        return outcomes

    # -- requests -------------------------------------------------------------------------------

    def _attempt(self, records: Sequence[DeliveryRecord]) -> Result:
        list_id = self._list_id(records[0])
        if list_id is None:  # the precheck lets none through; never send such a record as list 0
            return [_no_list_id()] * len(records)
        reply = self.caller.send(OPERATION, self._request(records, list_id))
        if isinstance(reply, Outcome):
            return [reply] * len(records)
        verdict = STATUS_TABLE(reply.status)
        if verdict is not Verdict.DELIVERED:
            return self.judge(reply, verdict, len(records), OPERATION)
        return self._read(reply, len(records))

    def _request(self, records: Sequence[DeliveryRecord], list_id: str) -> httpx.Request:
        fields = self._fields(records, list_id)
        if self.conn.use_post:
            return self.client.build_request("POST", self.endpoint, data=dict(fields))
        return self.client.build_request("GET", self.endpoint, params=fields)

    def _fields(self, records: Sequence[DeliveryRecord], list_id: str) -> Fields:
        fields: Fields = [
            ("r", self.conn.realm),
            ("p", self.password),
            ("c", "unsub"),
            ("list_id", list_id),
        ]
        if list_id == GLOBAL_LIST_ID or self.conn.list_optout:
            fields.append(("optout", "1"))
        rows = [self.header, *(self._row(r) for r in records)]
        fields.append(("data", RECORD_SEPARATOR.join(rows)))
        return fields

    def _row(self, record: DeliveryRecord) -> str:
        if self.conn.customer_key_required:
            return f"{record.email}{FIELD_SEPARATOR}{record.customer_key or ''}"
        return record.email

    def _list_id(self, record: DeliveryRecord) -> str | None:
        """``0`` for a global opt-out, the record's canonical list id, else None (never sent)."""
        if record.target_kind is TargetKind.GLOBAL:
            return GLOBAL_LIST_ID
        value = record.target_value
        if record.target_kind is TargetKind.LIST and value and _LIST_ID.fullmatch(value):
            return value
        return None

    # -- URL length -----------------------------------------------------------------------------

    def _fixed_url_length(self, list_id: str) -> int:
        """Length of the URL with the header row and no record (worked out once per list id)."""
        known = self._fixed_lengths.get(list_id)
        if known is None:
            fields = [("r", self.conn.realm), ("p", self.password), ("c", "unsub"), ("list_id", list_id)]
            fields += [("optout", "1"), ("data", self.header)]
            known = self._fixed_lengths[list_id] = len(str(httpx.URL(self.endpoint, params=fields)))
        return known

    def _row_length(self, record: DeliveryRecord) -> int:
        return encoded_length(RECORD_SEPARATOR + self._row(record))

    def _too_long(self, records: Sequence[DeliveryRecord]) -> bool:
        fixed = self._fixed_url_length(self._list_id(records[0]) or LONGEST_LIST_ID)
        return fixed + sum(self._row_length(r) for r in records) > self.conn.max_url_length

    def _chunks(self, batch: Sequence[DeliveryRecord]) -> list[list[DeliveryRecord]]:
        """The batch cut so that every GET URL stays within ``max_url_length``."""
        if not batch:
            return []
        if self.conn.use_post:
            return [list(batch)]
        room = self.conn.max_url_length - self._fixed_url_length(self._list_id(batch[0]) or LONGEST_LIST_ID)
        chunks: list[list[DeliveryRecord]] = [[]]
        used = 0
        for record in batch:
            size = self._row_length(record)
            if chunks[-1] and used + size > room:
                chunks.append([])
                used = 0
            chunks[-1].append(record)
            used += size
        return chunks

    # -- answers --------------------------------------------------------------------------------

    def _read(self, reply: Reply, sent: int) -> Result:
        answer = parse_reply(reply.text)
        if answer is None:
            message = f"whatcounts answered neither SUCCESS nor FAILURE: {self.caller.brief(reply)}"
            return [
                Outcome.retry(
                    RetryCause.UNEXPECTED_RESPONSE,
                    message,
                    status=reply.status,
                    excerpt=self.caller.excerpt(reply),
                )
            ] * sent
        delivered = Outcome.delivered(status=reply.status)
        failed = self.dead(REJECTED_BY_PROVIDER, reply, OPERATION)
        if answer.has_counts:
            count = answer.failed_of(sent)
            if count == 0 and not answer.success:
                return Rejected(failed)
            return PartlyFailed(count, failed, delivered)
        if answer.success:
            return [delivered] * sent
        return self._failure(answer, reply, sent)

    def _failure(self, answer: ApiWebReply, reply: Reply, sent: int) -> Result:
        """A ``FAILURE: <reason>`` that counts nothing."""
        kind = answer.failure_kind()
        if kind is FailureKind.CREDENTIALS or (
            kind is FailureKind.CUSTOMER_KEY and not self.conn.customer_key_required
        ):
            # Wrong realm or password, or a realm that needs keys the settings do not send: an operator's job.
            return [self.reauth(reply, OPERATION)] * sent
        if kind is FailureKind.UNKNOWN_LIST:
            # Every record of the call shares the list: splitting cannot help.
            return [self.dead(REJECTED_BY_PROVIDER, reply, OPERATION)] * sent
        reason = INVALID_EMAIL if kind is FailureKind.INVALID_EMAIL else REJECTED_BY_PROVIDER
        return Rejected(self.dead(reason, reply, OPERATION))


def _no_list_id() -> Outcome:
    return Outcome.dead(
        NO_LIST_TARGET, "a list-scoped record without a valid list id; list 0 would be every list"
    )


def targets(request: UnsubscribeRequest, conn: WhatCountsConnection) -> list[str]:
    """Global: the global opt-out. List: each list the request names, else the connection's default."""
    if request.scope is Scope.GLOBAL:
        return [make_target(TargetKind.GLOBAL)]
    lists = request.target_for(conn.name).list_ids or ([conn.default_list_id] if conn.default_list_id else [])
    return [make_target(TargetKind.LIST, list_id) for list_id in lists]


PROVIDER: Final = Provider(
    type="whatcounts", connection=WhatCountsConnection, adapter=WhatCountsAdapter, targets=targets
)

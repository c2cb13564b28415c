"""Fake WhatCounts ``api_web``: list unsubscribe and global opt-out, caret-separated batches.

``GET|POST /whatcounts/bin/api_web`` with ``c|cmd=unsub|unsubscribe``, ``r|realm``, ``p|pwd``,
``list_id``, ``optout`` and ``d|data``: records separated by ``^``, fields by ``,``, the first record
naming the fields (``email`` required; ``customer_key`` required in a Customer Key realm).
``list_id=0&optout=1`` is a global opt-out from every list of the realm. Answers are the vendor's
one-line texts (always HTTP 200)::

    SUCCESS: 3 record(s) processed. 2 users unsubscribed from list(s) 5 (2 total contacts),
        Records Failed Other Error 1

A record fails (counted, never named) when its address is malformed, its field count differs from
the header, or (Customer Key realms) its key is empty or differs from the subscriber's. An address
that is not on the list is processed but not counted as unsubscribed (as WhatCounts does); with
``optout=1`` its opt-out record is still created. When every record fails the line starts with
``FAILURE:``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from unsub_dev.sandbox.cc_common import form_fields
from unsub_dev.sandbox.config import Realm, SandboxConfig, Subscriber
from unsub_dev.sandbox.faults import Fault
from unsub_dev.sandbox.provider import Provider
from unsub_dev.sandbox.state import is_email, norm

UNSUBSCRIBE: Final = "unsubscribe"
GLOBAL_LIST_ID: Final = "0"
UNSUB_COMMANDS: Final = frozenset({"unsub", "unsubscribe"})
BAD_REALM: Final = "FAILURE: Unable to determine customer account (realm)"
BAD_LIST: Final = (
    "FAILURE: Error looking up list ids, one or more list ids specified do not belong to your realm"
)
#: Not seen in WhatCounts' documents (the sentence is cut off there): our wording.
MISSING_CUSTOMER_KEY: Final = (
    "FAILURE: Customer Key is enabled for this realm and customer_key is missing from data"
)
MISSING_EMAIL: Final = "FAILURE: email is required in data"
UNKNOWN_COMMAND: Final = "FAILURE: Unknown command"


def bad_password(password: str, ip: str) -> str:
    """The vendor's text, which echoes the password the caller sent (never the right one)."""
    return (
        f"FAILURE: Password ({password}) doesn't match entry for API user credentials in database "
        f"or {ip} isn't an approved IP"
    )


@dataclass
class RealmState:
    config: Realm
    #: list id → member addresses.
    members: dict[str, set[str]] = field(default_factory=dict)
    customer_keys: dict[str, str] = field(default_factory=dict)
    #: list id → opted-out addresses; list id "0" holds global opt-outs.
    optouts: dict[str, set[str]] = field(default_factory=dict)
    #: (list id, address) pairs taken off a list (so auto_contacts addresses leave only once).
    removed: set[tuple[str, str]] = field(default_factory=set)

    def subscribe(self, sub: Subscriber) -> None:
        email = norm(sub.email)
        for list_id in sub.lists or self.config.lists:
            self.members.setdefault(str(list_id), set()).add(email)
        if sub.customer_key is not None:
            self.customer_keys[email] = sub.customer_key


class WhatCounts(Provider):
    name = "whatcounts"
    prefix = "/whatcounts"

    def reset(self, config: SandboxConfig) -> None:
        self.realms: dict[str, RealmState] = {}
        for realm in config.whatcounts.realms:
            self._add_realm(realm)

    def _add_realm(self, realm: Realm) -> None:
        state = RealmState(realm)
        for list_id in realm.lists:
            state.members.setdefault(str(list_id), set())
        for sub in realm.subscribers:
            state.subscribe(sub)
        self.realms[realm.realm] = state

    def seed(self, data: dict[str, Any]) -> dict[str, int]:
        added = {"realms": 0, "subscribers": 0}
        for raw in data.get("realms", []):
            realm = Realm.model_validate(raw)
            if realm.realm not in self.realms:
                self._add_realm(realm)
                added["realms"] += 1
            else:
                for sub in realm.subscribers:
                    self.realms[realm.realm].subscribe(sub)
            added["subscribers"] += len(realm.subscribers)
        return added

    def routes(self) -> list[BaseRoute]:
        return [Route("/bin/api_web", self.api_web, methods=["GET", "POST"])]

    def error_response(self, fault: Fault) -> Response:
        return PlainTextResponse(f"{fault.status} Service Unavailable\n", status_code=fault.status)

    def extra_state(self) -> dict[str, Any]:
        return {
            "realms": {
                name: {
                    "members": {lid: len(m) for lid, m in realm.members.items()},
                    "optouts": {lid: sorted(o) for lid, o in realm.optouts.items()},
                }
                for name, realm in self.realms.items()
            }
        }

    async def api_web(self, request: Request) -> Response:
        body = await request.body()
        fields = form_fields(request, body) if request.method == "POST" else dict(request.query_params)
        tenant = fields.get("r") or fields.get("realm") or "-"
        return await self.serve(UNSUBSCRIBE, lambda: self._api_web(request, fields), tenant=tenant)

    def _api_web(self, request: Request, fields: dict[str, str]) -> Response:
        text = self._answer(request, fields)
        if text.startswith("FAILURE"):
            self.reject(UNSUBSCRIBE, "FAILURE")
        return PlainTextResponse(text)

    def _answer(self, request: Request, fields: dict[str, str]) -> str:
        def get(*names: str) -> str:
            return next((fields[n] for n in names if n in fields), "")

        realm = self.realms.get(get("r", "realm"))
        if realm is None:
            return BAD_REALM
        password = get("p", "pwd")
        if password != realm.config.password:
            return bad_password(password, request.client.host if request.client else "unknown")
        if get("c", "cmd").lower() not in UNSUB_COMMANDS:
            return UNKNOWN_COMMAND
        list_id, optout = get("list_id").strip(), get("optout").strip() == "1"
        everywhere = list_id == GLOBAL_LIST_ID and optout
        if not everywhere and list_id not in realm.members:
            return BAD_LIST
        rows = [r.strip() for r in get("d", "data").split("^")]
        header = [h.strip().lower() for h in rows[0].split(",")] if rows[0] else []
        if "email" not in header:
            return MISSING_EMAIL
        if realm.config.customer_key and "customer_key" not in header:
            return MISSING_CUSTOMER_KEY
        return self._unsubscribe(realm, header, rows[1:], list_id, optout=optout, everywhere=everywhere)

    def _unsubscribe(
        self,
        realm: RealmState,
        header: list[str],
        rows: list[str],
        list_id: str,
        *,
        optout: bool,
        everywhere: bool,
    ) -> str:
        failed = unsubscribed = 0
        stamp = self.core.clock.iso()
        for row in rows:
            values = [v.strip() for v in row.split(",")]
            record = dict(zip(header, values, strict=False))
            email = norm(record.get("email", ""))
            key = record.get("customer_key")
            refused = self.faults.refuses(email)
            if (
                len(values) != len(header)
                or not is_email(email)
                or refused
                or not self._key_ok(realm, email, key)
            ):
                failed += 1
                continue
            was_member = self._remove(realm, email, list_id, everywhere=everywhere)
            if optout:
                realm.optouts.setdefault(GLOBAL_LIST_ID if everywhere else list_id, set()).add(email)
            unsubscribed += int(was_member)
            self.ledger.events.append(
                {
                    "realm": realm.config.realm,
                    "email": email,
                    "customer_key": key,
                    "list_id": list_id,
                    "global": everywhere,
                    "optout": optout,
                    "was_member": was_member,
                    "at": stamp,
                }
            )
        verdict = "FAILURE" if rows and failed == len(rows) else "SUCCESS"
        return (
            f"{verdict}: {len(rows)} record(s) processed. {unsubscribed} users unsubscribed from list(s) "
            f"{list_id} ({unsubscribed} total contacts), Records Failed Other Error {failed}"
        )

    def _key_ok(self, realm: RealmState, email: str, key: str | None) -> bool:
        if not realm.config.customer_key:
            return True
        known = realm.customer_keys.get(email)
        return bool(key) and (known is None or known == key)

    def _remove(self, realm: RealmState, email: str, list_id: str, *, everywhere: bool) -> bool:
        """Take the address off the list (every list when global); True when it was on one."""
        auto = self.core.auto_creates(email)
        lists = list(realm.members) if everywhere else [list_id]
        was_member = False
        for lid in lists:
            members = realm.members.setdefault(lid, set())
            # auto_contacts: every matching address counts as subscribed until taken off once.
            if email in members or (auto and (lid, email) not in realm.removed):
                members.discard(email)
                realm.removed.add((lid, email))
                was_member = True
        return was_member

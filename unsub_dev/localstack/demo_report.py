"""The demo's verdict: the system's own counters next to what the sandbox providers recorded.

Per connection, the delivered counter must equal the distinct (address, target) pairs the sandbox
recorded for that connection's provider account (CC partner account, WhatCounts realm, Insider
partner) and the count the mix expects; dead letters by reason must equal the mix's. Three more
checks cover intake (invalid messages), the JWT expiry (one token request to recover) and the outage
(answered with errors, retried, delivered).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Final

from unsub_dev.localstack.demo_mix import Mix
from worker.adapters.cc_partner import CcPartnerConnection
from worker.adapters.insider import InsiderConnection
from worker.adapters.whatcounts import WhatCountsConnection
from worker.pipeline.stats import Snapshot
from worker.settings import Connection, Settings

#: ``account`` of a CC partner event for a global unsubscribe (every client account).
CC_ALL_ACCOUNTS: Final = "*"
DEAD_PREFIX: Final = "dead:"
OK_MARK: Final = "✓"
FAIL_MARK: Final = "✗"


@dataclass(frozen=True)
class ConnectionRow:
    connection: str
    #: Where the sandbox recorded it: provider and account, realm or partner.
    recorded_at: str
    delivered: int
    retried: int
    dead: dict[str, int]
    sandbox_unsubscribed: int
    expected_delivered: int
    expected_dead: dict[str, int]
    pending: int

    @property
    def ok(self) -> bool:
        same = self.delivered == self.sandbox_unsubscribed == self.expected_delivered
        return same and self.dead == self.expected_dead and self.pending == 0


@dataclass(frozen=True)
class Check:
    name: str
    detail: str
    ok: bool


@dataclass
class Report:
    rows: list[ConnectionRow]
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "connections": [{**asdict(r), "ok": r.ok} for r in self.rows],
            "checks": [asdict(c) for c in self.checks],
        }


def _events(state: Mapping[str, Any], provider: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = state["providers"][provider]["unsubscribes"]
    return events


def sandbox_unsubscribed(conn: Connection, state: Mapping[str, Any]) -> tuple[str, int]:
    """Where the sandbox records ``conn``'s opt-outs, and how many distinct (address, target) it has."""
    provider = conn.type
    events = _events(state, provider)
    pairs: set[tuple[str, str]]
    if isinstance(conn, CcPartnerConnection):
        accounts = {conn.encoded_account_id, CC_ALL_ACCOUNTS}
        pairs = {(e["email"], e["account"]) for e in events if e["account"] in accounts}
        return f"{provider} {conn.encoded_account_id}", len(pairs)
    if isinstance(conn, WhatCountsConnection):
        pairs = {(e["email"], e["list_id"]) for e in events if e["realm"] == conn.realm}
        return f"{provider} {conn.realm}", len(pairs)
    if isinstance(conn, InsiderConnection):
        mine = [e for e in events if str(e["partner"]).lower() == conn.partner_name]
        pairs = {(e["email"], e["group"] or "") for e in mine}
        return f"{provider} {conn.partner_name}", len(pairs)
    # cc_contacts and easy.tools: one account per credential; each contact is opted out once.
    return provider, len({e["email"] for e in events})


def _dead_by_reason(counters: Mapping[str, int]) -> dict[str, int]:
    return {
        k.removeprefix(DEAD_PREFIX): v for k, v in sorted(counters.items()) if k.startswith(DEAD_PREFIX) and v
    }


def build_report(
    snapshot: Snapshot,
    state: Mapping[str, Any],
    settings: Settings,
    mix: Mix,
    *,
    expired_token_provider: str | None,
    outage_provider: str | None,
) -> Report:
    rows = []
    by_name = {c.name: c for c in snapshot.connections}
    for conn in settings.connections:
        stats = by_name[conn.name]
        recorded_at, unsubscribed = sandbox_unsubscribed(conn, state)
        rows.append(
            ConnectionRow(
                connection=conn.name,
                recorded_at=recorded_at,
                delivered=stats.counters.get("delivered", 0),
                retried=stats.counters.get("retried", 0),
                dead=_dead_by_reason(stats.counters),
                sandbox_unsubscribed=unsubscribed,
                expected_delivered=mix.delivered.get(conn.name, 0),
                expected_dead=dict(sorted(mix.dead.get(conn.name, {}).items())),
                pending=stats.pending + stats.waiting_retries,
            )
        )
    checks = [_intake_check(snapshot, mix)]
    if expired_token_provider is not None:
        checks.append(_token_check(state, expired_token_provider))
    if outage_provider is not None:
        checks.append(_outage_check(state, rows, settings, outage_provider))
    return Report(rows=rows, checks=checks)


def _intake_check(snapshot: Snapshot, mix: Mix) -> Check:
    requests = snapshot.intake.get("requests", 0)
    invalid = snapshot.intake.get("invalid", 0)
    dead_invalid = snapshot.dead_letters_total_by_reason.get("invalid_email", 0)
    detail = (
        f"{requests} requests taken in (expected {mix.requests}); {invalid} invalid, "
        f"{dead_invalid} dead-lettered invalid_email (expected {mix.invalid})"
    )
    return Check("intake", detail, requests == mix.requests and invalid == dead_invalid == mix.invalid)


def _token_check(state: Mapping[str, Any], provider: str) -> Check:
    p = state["providers"][provider]
    tokens = int(p["token_requests"])
    unauthorized = rejected_calls(p, "401")
    detail = (
        f"{provider} JWT expired mid-run: {unauthorized} call(s) answered 401, "
        f"{tokens} token request(s) in all (expected 2: the first and one after the expiry)"
    )
    return Check("token expiry", detail, unauthorized >= 1 and tokens == 2)


def _outage_check(
    state: Mapping[str, Any], rows: Iterable[ConnectionRow], settings: Settings, provider: str
) -> Check:
    failed = sum(rejected_calls(state["providers"][provider], s) for s in ("500", "502", "503", "504"))
    names = {c.name for c in settings.connections if c.type == provider}
    mine = [r for r in rows if r.connection in names]
    retried = sum(r.retried for r in mine)
    delivered = all(r.delivered == r.expected_delivered for r in mine)
    detail = (
        f"{provider} outage: {failed} call(s) failed, {retried} record(s) retried, "
        f"{'all' if delivered else 'NOT all'} delivered"
    )
    return Check("outage", detail, failed >= 1 and retried >= 1 and delivered)


def rejected_calls(provider_state: Mapping[str, Any], status: str) -> int:
    """Calls the sandbox provider answered with ``status``, over all its operations."""
    return sum(int(by_status.get(status, 0)) for by_status in provider_state["rejected"].values())


def reasons_text(dead: Mapping[str, int], sep: str = ", ") -> str:
    return sep.join(f"{n} {reason}" for reason, n in dead.items()) or "0"


def mark(ok: bool) -> str:
    return f"[green]{OK_MARK}[/]" if ok else f"[bold red]{FAIL_MARK}[/]"


def check_lines(report: Report) -> list[str]:
    """What each failed row expected, then one line per extra check, with its mark (rich markup)."""
    lines = [
        "sandbox: distinct addresses (per list or group) the sandbox provider recorded as unsubscribed "
        "in the connection's account, realm or partner"
    ]
    for r in report.rows:
        if not r.ok:
            dead = reasons_text(r.expected_dead)
            lines.append(
                f"{mark(False)} {r.connection}: expected {r.expected_delivered} delivered and {dead} "
                f"dead-lettered, the sandbox recorded {r.sandbox_unsubscribed}"
                + (f", {r.pending} record(s) still pending" if r.pending else "")
            )
    return lines + [f"{mark(c.ok)} {c.name}: {c.detail}" for c in report.checks]

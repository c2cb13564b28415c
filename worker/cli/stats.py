"""`unsub stats` and `unsub status`: what the system has done, and what happened to one request."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table

from producer.contract import normalize_email
from worker.cli._common import ConfigOption, Exit, console, fail, format_age, format_time, runtime_or_exit
from worker.pipeline import stats as stats_mod
from worker.pipeline import status as status_mod

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def stats(config: ConfigOption = None, as_json: JsonOption = False) -> None:
    """Counts per connection and outcome, waiting records, breakers and dead letters (from Redis)."""
    rt = runtime_or_exit(config)
    snapshot = stats_mod.collect(rt.redis, rt.settings)
    if as_json:
        console.print_json(json.dumps(stats_mod.as_dict(snapshot)))
        return
    table = Table(title="connections")
    columns = ("connection", "type", "pending", "retrying", "delivered", "retried", "dead", "held",
               "calls", "429s", "breaker", "oldest pending")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in {"connection", "type", "breaker"} else "right")
    for c in snapshot.connections:
        n = c.counters
        breaker = c.breaker if c.breaker == "closed" else f"[red]{c.breaker}[/] ({c.breaker_reason})"
        counts = [n.get(k, 0) for k in ("delivered", "retried", "dead_lettered", "held", "provider_calls")]
        table.add_row(
            c.name,
            c.type,
            str(c.pending),
            str(c.waiting_retries),
            *(str(v) for v in counts),
            str(n.get("throttled_429", 0)),
            breaker,
            format_age(c.oldest_pending_age_s),
        )
    console.print(table)
    intake = snapshot.intake
    console.print(
        f"intake: {intake.get('requests', 0)} requests, {intake.get('accepted', 0)} accepted, "
        f"{intake.get('duplicate_requests', 0)} duplicates, {intake.get('invalid', 0)} invalid, "
        f"{intake.get('deliveries', 0)} deliveries queued",
        highlight=False,
    )
    dead = ", ".join(f"{r}: {n}" for r, n in snapshot.dead_letters_by_reason.items()) or "none"
    console.print(f"dead letters now: {snapshot.dead_letters_now} ({dead})", highlight=False)


def status(
    request_id: Annotated[str | None, typer.Argument(help="The request id (idempotency key).")] = None,
    email: Annotated[str | None, typer.Option("--email", help="Every request for this address.")] = None,
    config: ConfigOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per target connection: state, attempts and timestamps of one request (compliance evidence).

    Exit 0 when found, 1 when nothing is known (never seen, or past the retention).
    """
    if (request_id is None) == (email is None):
        fail("give a REQUEST_ID or --email, not both", Exit.USAGE)
    rt = runtime_or_exit(config)
    if email is not None:
        try:
            ids = status_mod.request_ids_for_email(rt.redis, normalize_email(email))
        except ValueError as exc:
            fail(str(exc), Exit.USAGE)
    else:
        ids = [request_id or ""]
    found = {rid: status_mod.read(rt.redis, rid) for rid in ids}
    known = {rid: s for rid, s in found.items() if s is not None}
    if as_json:
        console.print_json(json.dumps({rid: s.model_dump(mode="json") for rid, s in known.items()}))
    for rid, request_status in known.items():
        if not as_json:
            _print_status(rid, request_status)
    if not known:
        fail("no such request (never received, or older than the status retention)", Exit.FAILED)


def _print_status(request_id: str, found: status_mod.RequestStatus) -> None:
    meta = found.meta
    if meta:
        console.print(
            f"[bold]{request_id}[/]  {meta.email_masked}  scope={meta.scope}  source={meta.source}  "
            f"requested {meta.requested_at}  accepted {format_time(meta.accepted_at)} UTC",
            highlight=False,
        )
    table = Table()
    for column in ("connection", "target", "state", "tries", "when (UTC)"):
        table.add_column(column, no_wrap=column in {"state", "when (UTC)"})
    now = time.time()
    notes = []
    for d in found.deliveries:
        if d.delivered_at:
            when = f"delivered {format_time(d.delivered_at)}"
        elif d.next_attempt_at:
            when = f"next {format_time(d.next_attempt_at)} (in {format_age(max(d.next_attempt_at - now, 0))})"
        else:
            when = f"updated {format_time(d.updated_at)}"
        table.add_row(d.connection, d.target, d.state.value, str(d.attempts), when)
        why = (
            f"same as request {d.duplicate_of}"
            if d.duplicate_of
            else " ".join(filter(None, [d.reason, d.message]))
        )
        if why:
            notes.append(f"  {d.connection} {d.target}: {why}")
    console.print(table)
    for note in notes:
        console.print(note, highlight=False, markup=False, soft_wrap=True)
